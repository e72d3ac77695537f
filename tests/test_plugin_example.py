"""``examples/plugin`` end to end, as a team would run its own framework: the plugin is installed
into the worker's own environment only (``tests/envs.py``: aiq and the plugin from this
checkout), the worker runs from there against the session's Redis, and the gateway runs from the
main environment, which does not have the plugin. Over real HTTP:

* the gateway refuses the plugin's model type (422 naming the known ones) until the worker
  announced it, then accepts it without a restart;
* a training job's progress (every epoch) follows over SSE until it succeeded, with its result;
* inference by ``model_id`` answers predictions;
* an unknown model type is a 422 naming the plugin's too, a value out of a declared range a 422
  naming ``body.hyperparameters.<name>`` (single and batch);
* with no worker left, a new gateway still accepts the type (the declaration stays in Redis).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_sync

from aiq.redis_server import RedisServer, free_port
from schemas.catalogue import CATALOGUE
from tests.envs import example_plugin_env
from tests.live_stack import healthy, start_gateway, stop, wait_until
from tests.support import SPAWNED, die_with_parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PLUGIN_TYPE = "numpy-example"
TRAIN = {"model_type": "softmax_regression", "data_path": "builtin:digits",
         "hyperparameters": {"epochs": 8, "learning_rate": 0.5, "batch_size": 64}}
# The gateway's timer never fires within the test: what it learns, it learns on a refusal.
GATEWAY_ENV = {"CATALOGUE_REFRESH_S": "3600"}
DEADLINE_S = 180.0  # per job, for a machine 3x slower than this one (a job takes ~2 s here)


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example_plugin_env(tmp_path_factory.mktemp("plugin-env"))


def _worker(python: Path, redis_url: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(WORKER_TYPE=PLUGIN_TYPE, MODEL_FRAMEWORK="numpy_example", REDIS_URL=redis_url,
               DATA_ROOT=str(tmp / "data"), ARTIFACT_ROOT=str(tmp / "artifacts"),
               HEARTBEAT_INTERVAL_S="0.5", MAX_CONCURRENT_JOBS="2", LOG_JSON="true",
               PROGRESS_INTERVAL_S="0")  # no time-based coalescing of progress reports
    (tmp / "data").mkdir(exist_ok=True)
    proc = subprocess.Popen([str(python), "-m", "consumers"], env=env,
                            stdout=(tmp / "worker.log").open("ab"), stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)  # noqa: PLW1509 - from the main thread
    SPAWNED.append(proc)
    return proc


def _logs(tmp: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(tmp.glob("*.log")))


def _error(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    error: dict[str, Any] = r.json()["error"]
    return error


def _follow(url: str, job_id: str) -> list[dict[str, Any]]:
    """The job's SSE events (id, event, data as JSON) until the stream ends after the terminal
    one."""
    events: list[dict[str, Any]] = []
    frame: dict[str, str] = {}
    deadline = time.monotonic() + DEADLINE_S
    with httpx.stream("GET", f"{url}/jobs/{job_id}/events",
                      timeout=httpx.Timeout(30, connect=10)) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():  # `: ping` every SSE_HEARTBEAT_S (1 s) when idle
            assert time.monotonic() < deadline, f"no end of {job_id}'s events: {events}"
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                frame[name] = value.removeprefix(" ")
            elif frame:
                events.append({**frame, "data": orjson.loads(frame["data"])})
                frame = {}
    return events


def _digits(n: int) -> tuple[list[list[float]], list[int]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data[:n].tolist(), data.target[:n].tolist()


def test_a_plugin_trains_through_the_queue_from_its_own_environment(
        plugin_python: Path, redis_server: RedisServer, tmp_path: Path) -> None:
    assert importlib.util.find_spec("aiq_example_plugin") is None  # not in the gateway's env
    assert PLUGIN_TYPE not in CATALOGUE
    redis_server.ensure_running()
    with redis_sync.Redis.from_url(redis_server.url) as client:
        client.flushall()
    url_port = free_port()
    url = f"http://127.0.0.1:{url_port}"
    gateway = start_gateway(redis_server.url, url_port, tmp_path / "gateway.log", GATEWAY_ENV)
    worker = None
    try:
        wait_until(lambda: healthy(url), 60, "gateway /health")
        _the_gateway_refuses_what_it_never_saw(url)
        worker = _worker(plugin_python, redis_server.url, tmp_path)
        _announced(worker, redis_server.url, tmp_path)
        _validation_knows_the_plugin(url)
        model_id = _train(url)
        _infer(url, model_id)
        workers = httpx.get(f"{url}/workers", timeout=10).json()["workers"]
        assert [(w["worker_type"], w["framework"]) for w in workers] == [
            (PLUGIN_TYPE, "numpy_example")]
        stop(worker, timeout=30)
        assert worker.returncode == 0, _logs(tmp_path)
        stop(gateway)
        _a_new_gateway_accepts_the_type_with_no_worker(redis_server.url, tmp_path)
    except BaseException:
        print(_logs(tmp_path))
        raise
    finally:
        if worker is not None:
            stop(worker)
        stop(gateway)


def _the_gateway_refuses_what_it_never_saw(url: str) -> None:
    error = _error(httpx.post(f"{url}/jobs/training", json=TRAIN, timeout=10))
    assert error["details"][0]["field"] == "body.model_type"
    assert "unknown model type 'softmax_regression'; known: alexnet, bert" in error["message"]


def _announced(worker: subprocess.Popen[bytes], redis_url: str, tmp: Path) -> None:
    def check() -> bool:
        assert worker.poll() is None, f"the worker exited {worker.returncode}\n{_logs(tmp)}"
        with redis_sync.Redis.from_url(redis_url) as client:
            return bool(client.sismember("ai:worker_types", PLUGIN_TYPE))

    wait_until(check, 120, "the plugin's worker to announce its type")


def _validation_knows_the_plugin(url: str) -> None:
    error = _error(httpx.post(f"{url}/jobs/training", json={**TRAIN, "model_type": "xgboost"},
                              timeout=10))
    assert "nearest_centroid" in error["message"] and "softmax_regression" in error["message"]
    bad = {**TRAIN, "hyperparameters": {"epochs": 5_000, "l2": -1}}
    fields = {d["field"]: d["message"] for d in _error(
        httpx.post(f"{url}/jobs/training", json=bad, timeout=10))["details"]}
    assert fields == {
        "body.hyperparameters.epochs": "should be an integer between 1 and 1000 for model "
                                       "type softmax_regression",
        "body.hyperparameters.l2": "should be a number between 0 and 10 for model type "
                                   "softmax_regression"}
    batch = _error(httpx.post(f"{url}/jobs/training/batch", json={"jobs": [TRAIN, bad]},
                              timeout=10))
    assert {d["field"] for d in batch["details"]} == {"body.jobs[1].hyperparameters.epochs",
                                                      "body.jobs[1].hyperparameters.l2"}


def _train(url: str) -> str:
    r = httpx.post(f"{url}/jobs/training", json=TRAIN, timeout=10)
    assert r.status_code == 202, r.text  # learned on the refusal's read, no restart
    assert r.json()["worker_type"] == PLUGIN_TYPE
    job_id: str = r.json()["job_id"]
    events = _follow(url, job_id)
    assert events[0]["event"] == "queued" and events[-1]["event"] == "succeeded", events
    epochs = [e["data"]["epoch"] for e in events
              if e["event"] == "progress" and e["data"].get("stage") == "training"]
    # A report per epoch, in order; the worker publishes the latest of those made while it
    # publishes one (an epoch here takes a millisecond), so some are coalesced away.
    assert epochs == sorted(set(epochs)) and epochs[-1] == 8 and len(epochs) >= 2, events
    assert all("accuracy" in e["data"]["metrics"] for e in events
               if e["event"] == "progress" and e["data"].get("stage") == "training")
    result = events[-1]["data"]["result"]
    assert result["metrics"]["accuracy"] > 0.85 and result["framework"] == "numpy_example"
    record = httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()
    assert record["status"] == "succeeded" and record["result"] == result
    return job_id


def _infer(url: str, model_id: str) -> None:
    rows, labels = _digits(30)
    r = httpx.post(f"{url}/jobs/inference", json={"model_id": model_id, "inputs": rows},
                   timeout=10)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    events = _follow(url, job_id)
    assert events[-1]["event"] == "succeeded", events
    predictions = events[-1]["data"]["result"]["predictions"]
    assert len(predictions) == 30
    assert sum(p == y for p, y in zip(predictions, labels, strict=True)) >= 25


def _a_new_gateway_accepts_the_type_with_no_worker(redis_url: str, tmp: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = start_gateway(redis_url, port, tmp / "gateway-2.log", GATEWAY_ENV)
    try:
        wait_until(lambda: healthy(url), 60, "second gateway /health")
        r = httpx.post(f"{url}/jobs/training", json=TRAIN, timeout=10)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"  # waits for the type to be scaled up again
        assert httpx.get(f"{url}/workers", timeout=10).json()["workers"] == []
    finally:
        gateway.send_signal(signal.SIGTERM)
        stop(gateway)


def test_the_plugins_environment_lists_its_type_and_where_it_comes_from(
        plugin_python: Path) -> None:
    aiq = plugin_python.parent / "aiq"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"COLUMNS": "200"}
    proc = subprocess.run([str(aiq), "types"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.split()[:1] == [PLUGIN_TYPE])
    assert "numpy >=1.24" in row and "yes" in row and "aiq-example-plugin 0.1.0" in row
    assert "nearest_centroid softmax_regression" in row
