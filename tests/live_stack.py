"""A real deployment for end-to-end tests: the gateway (``python -m gateway``) and a diagnostic
worker (``python -m consumers``) as subprocesses on the test session's Redis.

Used by the CLI and dashboard tests, which talk to it over real HTTP, SSE and WebSocket.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync

from aiq.redis_server import RedisServer, free_port
from tests.support import die_with_parent, settings_for, spawn_worker


@dataclass
class Stack:
    url: str  # the gateway's base URL
    redis_url: str
    port: int
    tmp: Path
    gateway: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]

    def logs(self) -> str:
        parts = []
        for name in ("gateway.log", "worker.log"):
            path = self.tmp / name
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} (last 3000 chars)\n{text[-3000:]}")
        return "\n".join(parts)

    def submit(self, model_type: str, **hyperparameters: Any) -> str:
        body = {"model_type": model_type, "hyperparameters": hyperparameters}
        response = httpx.post(f"{self.url}/jobs/training", json=body, timeout=10)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def restart_gateway(self) -> None:
        stop(self.gateway)
        self.gateway = start_gateway(self.redis_url, self.port, self.tmp / "gateway.log")
        wait_until(lambda: healthy(self.url), 30, "gateway back up", self)


def start_gateway(redis_url: str, port: int, log: Path,
                  extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(port),
           "LOG_LEVEL": "warning", "SSE_HEARTBEAT_S": "1", **(extra_env or {})}
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=out,
                            stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)  # noqa: PLW1509 - from the main thread


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _worker_registered(url: str, api_key: str | None = None) -> bool:
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        workers = httpx.get(f"{url}/workers", timeout=1, headers=headers).json()["workers"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return any(w["worker_type"] == "diagnostic" for w in workers)


def wait_until(check: Any, timeout: float, what: str, stack: Stack | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            logs = stack.logs() if stack else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(0.05)


@contextlib.contextmanager
def live_stack(redis_server: RedisServer, tmp: Path, api_key: str | None = None,
               gateway_env: dict[str, str] | None = None,
               worker_settings: dict[str, Any] | None = None) -> Iterator[Stack]:
    """Gateway + one diagnostic worker on a running, flushed Redis; stopped on exit.
    ``api_key``, ``gateway_env`` and ``worker_settings`` configure the two (e.g. command
    jobs)."""
    redis_server.ensure_running()
    with redis_sync.Redis.from_url(redis_server.url) as client:
        client.flushall()
    port = free_port()
    env = {**(gateway_env or {}), **({"API_KEY": api_key} if api_key else {})}
    gateway = start_gateway(redis_server.url, port, tmp / "gateway.log", env)
    worker = spawn_worker(settings_for(redis_server.url, tmp, **(worker_settings or {})),
                          tmp / "worker.log")
    stack = Stack(f"http://127.0.0.1:{port}", redis_server.url, port, tmp, gateway, worker)
    try:
        wait_until(lambda: healthy(stack.url), 30, "gateway /health", stack)
        wait_until(lambda: _worker_registered(stack.url, api_key), 30, "diagnostic worker",
                   stack)
        yield stack
    finally:
        stop(stack.worker)
        stop(stack.gateway)
