"""``aiq up`` as a user runs it: its own Redis, the gateway, real workers, a real training job,
then Ctrl-C, and nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest

from aiq.installed import catalogue_availability
from aiq.redis_server import free_port, redis_reachable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

T = TypeVar("T")
# The README's example.
TRAINING = {
    "model_type": "random_forest",
    "data_path": "builtin:digits",
    "hyperparameters": {"n_estimators": 100},
    "description": "digits",
}


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    api: str
    redis_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"aiq up still running after {timeout}s:\n{self.output()[-4000:]}")


def _eventually(check: Callable[[], T | None], timeout: float, what: str, up: Up) -> T:
    """Poll ``check`` until it returns a value, failing with aiq up's output at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.process.poll() is not None:
            pytest.fail(f"aiq up exited ({up.process.returncode}) waiting for {what}:\n"
                        f"{up.output()[-4000:]}")
        value = check()
        if value is not None:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{up.output()[-4000:]}")


def _kill_all(up: Up) -> None:
    """Clean up after a failed test: aiq up and anything it started."""
    try:
        left = up.descendants()
    except psutil.NoSuchProcess:
        left = []
    for proc in [*left, psutil.Process(up.process.pid)] if up.process.poll() is None else left:
        proc.kill()
    up.process.wait(10)


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    assert not redis_reachable(redis_url)  # so aiq up must start its own

    def start(*args: str) -> Up:
        port = free_port()
        log = tmp_path / f"up-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "aiq", "up", "--redis-url", redis_url, "--port", str(port),
                 "--data-dir", str(tmp_path / "aiq"), *args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, like a terminal's foreground job
            )
        up = Up(process, f"http://127.0.0.1:{port}", redis_url, log)
        started.append(up)
        return up

    yield start
    for up in started:
        if up.process.poll() is None:
            _kill_all(up)


def _line(up: Up, prefix: str) -> str | None:
    return next((line for line in up.output().splitlines() if line.startswith(prefix)), None)


def _healthy(client: httpx.Client) -> Callable[[], bool | None]:
    def check() -> bool | None:
        try:
            return client.get("/health").status_code == 200 or None
        except httpx.HTTPError:
            return None

    return check


def _finished(client: httpx.Client, job_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status: dict[str, Any] = client.get(f"/jobs/{job_id}/status").raise_for_status().json()
        return status if status["status"] in {"succeeded", "failed", "cancelled"} else None

    return check


def _assert_all_gone(children: list[psutil.Process], redis_url: str) -> None:
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
    assert not redis_reachable(redis_url)


def test_up_trains_a_model_then_stops_everything_on_ctrl_c(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    up = start_up()
    with httpx.Client(base_url=up.api, timeout=5) as client:
        _eventually(_healthy(client), 60, "GET /health 200", up)
        submitted = client.post("/jobs/training", json=TRAINING)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        status = _eventually(_finished(client, job_id), 90, "the training job", up)
    assert status["status"] == "succeeded", status
    assert status["result"]["metrics"]["accuracy"] >= 0.9
    # The banner comes once every worker has registered (torch and tensorflow workers from
    # their .venvs/<extra> take a while); it names each type installed here.
    banner = _eventually(lambda: _line(up, "aiq up: workers"), 120, "the banner", up)
    names = set(banner.replace(",", " ").split())
    for found in catalogue_availability():
        assert (found.worker_type.name in names) == found.ok, (found, banner)
    assert "started by aiq up" in up.output()
    assert (tmp_path / "aiq" / "artifacts" / job_id).is_dir()

    children = up.descendants()
    names = " ".join(" ".join(p.cmdline()) for p in children)
    assert "redis-server" in names and "-m gateway" in names and "-m consumers" in names
    started = time.monotonic()
    os.killpg(up.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert up.wait_exit(30) == 0, up.output()[-4000:]
    assert time.monotonic() - started < 20
    _assert_all_gone(children, up.redis_url)
    assert "killed" not in up.output()  # every child stopped by itself, in time
    assert any((tmp_path / "aiq" / "redis").glob("appendonly*"))  # the AOF stays

    # A second run on the same data dir finds the job again (AOF) and, when a child dies,
    # stops the rest and exits non-zero.
    again = start_up("--types", "diagnostic")
    with httpx.Client(base_url=again.api, timeout=5) as client:
        _eventually(_healthy(client), 60, "GET /health 200 (second run)", again)
        assert client.get(f"/jobs/{job_id}/status").json()["status"] == "succeeded"
    children = again.descendants()
    worker = next(p for p in children if "consumers" in " ".join(p.cmdline()))
    worker.kill()
    assert again.wait_exit(30) == 1
    assert "exited unexpectedly" in again.output()
    _assert_all_gone(children, again.redis_url)


def test_up_keeps_worker_metrics_off_whatever_the_environment_says() -> None:
    """Workers on one host cannot share a METRICS_PORT exported in the shell."""
    from aiq.up import _worker_env
    from schemas.catalogue import CATALOGUE

    env = _worker_env({"METRICS_PORT": "9100"}, CATALOGUE["diagnostic"])
    assert env["METRICS_PORT"] == "0"
