"""A real Prometheus (Debian's ``prometheus``, on a free port, storage in a temp dir, scraping
every second) scrapes a real gateway process and a real worker process (its METRICS_PORT, with
scripted GPU devices so its GPU series exist) on the test session's Redis. Jobs run through the
gateway; what Prometheus then answers over its HTTP query API must have moved as the jobs did:
aiq_jobs_total by outcome, the duration and queue-wait histograms' counts, failures by code,
queue depth while jobs waited. Every query of the Grafana dashboard and every alert rule is then
evaluated by that Prometheus without error (and the dashboard's queries return data).

Everything is polled with a deadline sized for a machine three times slower than a developer's;
each process is stopped (SIGTERM, then SIGKILL) in ``finally``, so nothing hangs in teardown.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from aiq.redis_server import RedisServer, free_port
from tests.live_stack import start_gateway, stop
from tests.support import die_with_parent, settings_for, spawn_worker
from tests.test_grafana_dashboard import DASHBOARD, queries

PROMETHEUS = shutil.which("prometheus")
RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"
DIAG = 'worker_type="diagnostic", kind="training"'
START_S = 90.0  # processes up and scraped (a few seconds here)
SETTLE_S = 90.0  # jobs done and their numbers in Prometheus (about ten seconds here)

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(420),
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get "
                       "install prometheus; .ci/run does it)"),
]

T = TypeVar("T")


def poll(check: Callable[[], T | None], timeout: float, what: str,
         logs: Callable[[], str] = lambda: "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
            last = exc
        else:
            if last is not None and last is not False:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})\n"
                         f"{logs()}")


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; raises on a PromQL error."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The one value of ``expr`` (None when it has no series yet)."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None


def _config(tmp: Path, gateway_port: int, worker_port: int) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "aiq-gateway",
             "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}]},
            {"job_name": "aiq-workers",
             "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
        ],
    }
    path = tmp / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@contextlib.contextmanager
def prometheus(tmp: Path, config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    assert PROMETHEUS is not None
    log = (tmp / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent)  # noqa: PLW1509 - from the main thread
    try:
        yield proc
    finally:
        stop(proc)
        log.close()


def _tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(none)"
    return f"--- {path.name}\n{text[-2500:]}"


def submit(api: str, model_type: str, **hp: Any) -> str:
    r = httpx.post(f"{api}/jobs/training", json={"model_type": model_type,
                                                 "hyperparameters": hp}, timeout=10)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def finished(api: str, job_ids: list[str]) -> bool:
    statuses = [httpx.get(f"{api}/jobs/{j}/status", timeout=5).json()["status"]
                for j in job_ids]
    return all(s in ("succeeded", "failed") for s in statuses)


def check_job_series(prom: Prom, all_logs: Callable[[], str], before: float) -> None:
    """10 jobs succeeded, 1 failed: the series moved by exactly that."""
    succeeded = f'aiq_jobs_total{{{DIAG}, outcome="succeeded"}}'
    n_ok, n_failed = 10, 1
    poll(lambda: prom.value(succeeded) == before + n_ok, SETTLE_S,
         "aiq_jobs_total{outcome=succeeded} up by 10", all_logs)
    assert prom.value(f'aiq_jobs_total{{{DIAG}, outcome="failed"}}') == n_failed
    assert prom.value(f'aiq_jobs_submitted_total{{{DIAG}}}') == n_ok + n_failed
    poll(lambda: prom.value(
        f'sum(aiq_job_duration_seconds_count{{{DIAG}, outcome="succeeded"}})') == n_ok,
        SETTLE_S, "the duration histogram's count at 10", all_logs)
    assert prom.value(f'sum(aiq_job_duration_seconds_count{{{DIAG}, model_type="sleep"}})'
                      ) == 6
    sleep_s = prom.value(f'sum(aiq_job_duration_seconds_sum{{{DIAG}, model_type="sleep"}})')
    assert sleep_s is not None and sleep_s >= 6 * 0.9
    assert prom.value(f'sum(aiq_job_duration_seconds_count{{{DIAG}, outcome="failed"}})'
                      ) == n_failed
    assert prom.value(f'sum(aiq_job_queue_wait_seconds_count{{{DIAG}}})') == n_ok + n_failed
    assert prom.value(f'aiq_job_failures_total{{{DIAG}, code="diagnostic", '
                      f'outcome="failed"}}') == 1
    # The queue was deep while the sleeps held both slots, and drained.
    deepest = prom.value(f'max_over_time(aiq_queue_length{{{DIAG}}}[5m])')
    assert deepest is not None and deepest >= 3
    busiest = prom.value('max_over_time(aiq_worker_jobs_running{worker_type="diagnostic"}'
                         '[5m])')
    assert busiest == 2
    poll(lambda: prom.value(f'aiq_queue_length{{{DIAG}}}') == 0, SETTLE_S,
         "the queue length back at 0", all_logs)
    assert prom.value('aiq_gpu_memory_total_bytes{worker_type="diagnostic", gpu="0"}'
                      ) == 16000 * 2**20
    renewals = prom.value('aiq_lease_renewals_total{worker_type="diagnostic"}')
    assert renewals is not None and renewals > 0  # 1 s jobs, a lease renewed every 1/3 s


def check_dashboard_and_rules(prom: Prom, all_logs: Callable[[], str]) -> None:
    """The dashboard's queries and the alert rules, evaluated by this Prometheus."""
    dashboard = json.loads(DASHBOARD.read_text())
    for expr in queries(dashboard):
        concrete = expr.replace("$__rate_interval", "1m").replace("$worker_type", ".*")

        def answers(e: str = concrete) -> bool:
            return bool(prom.query(e))

        poll(answers, SETTLE_S, f"data for the dashboard query {concrete!r}", all_logs)

    def rules() -> list[dict[str, Any]]:
        groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    assert len(rules()) == 5
    poll(lambda: all(r["health"] == "ok" and not r["lastEvaluation"].startswith("0001")
                     for r in rules()),  # 0001-01-01: not evaluated yet
         SETTLE_S, "every alert rule evaluated without error", all_logs)
    alerts = httpx.get(f"{prom.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"] == []


def test_prometheus_sees_the_jobs_move_the_series(redis_server: RedisServer, redis_url: str,
                                                   tmp_path: Path) -> None:
    gateway_port, worker_port, prom_port = free_port(), free_port(), free_port()
    api, prom = f"http://127.0.0.1:{gateway_port}", Prom(f"http://127.0.0.1:{prom_port}")
    gpu_script = tmp_path / "gpus.json"
    gpu_script.write_text(json.dumps({"devices": [
        {"name": "scripted-0", "total_mb": 16000, "free_mb": 12000}]}))
    settings = settings_for(redis_url, tmp_path, metrics_port=worker_port,
                            metrics_host="127.0.0.1", gpu_script=gpu_script, max_retries=0)
    logs = [tmp_path / n for n in ("gateway.log", "worker.log", "prometheus.log")]

    def all_logs() -> str:
        return "\n".join(_tail(p) for p in logs)

    with contextlib.ExitStack() as stack:
        gateway = start_gateway(redis_url, gateway_port, logs[0])
        stack.callback(stop, gateway)
        worker = spawn_worker(settings, logs[1])
        stack.callback(stop, worker)
        stack.enter_context(prometheus(tmp_path, _config(tmp_path, gateway_port, worker_port),
                                       prom_port))

        def both_up() -> bool:
            up = {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
            return up == {"aiq-gateway": "1", "aiq-workers": "1"}

        poll(both_up, START_S, "Prometheus scraping the gateway and the worker", all_logs)
        poll(lambda: prom.value('aiq_workers{worker_type="diagnostic"}') == 1, START_S,
             "the worker registered, as Prometheus sees it", all_logs)
        succeeded = f'aiq_jobs_total{{{DIAG}, outcome="succeeded"}}'
        before = prom.value(succeeded)
        assert before == 0
        assert prom.value(f'sum(aiq_job_duration_seconds_count{{{DIAG}}})') is None

        # Six 1 s jobs on two slots keep jobs waiting for a few scrapes; then quick ones.
        jobs = [submit(api, "sleep", seconds=1.0, steps=2) for _ in range(6)]
        jobs += [submit(api, "noop") for _ in range(4)]
        jobs.append(submit(api, "fail", error="fatal"))
        poll(lambda: finished(api, jobs), SETTLE_S, "the jobs to finish", all_logs)

        check_job_series(prom, all_logs, before)
        check_dashboard_and_rules(prom, all_logs)
    assert gateway.poll() is not None and worker.poll() is not None
