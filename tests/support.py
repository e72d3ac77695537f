"""Test helpers: worker settings, in-process and subprocess workers, polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from consumers.frameworks import load_framework
from consumers.gpu import GpuDevices
from consumers.runtime import Worker
from consumers.settings import WorkerSettings
from streams.connection import client

FAST = {
    "lease_timeout_s": 1.0,
    "reclaim_interval_s": 0.1,
    "heartbeat_interval_s": 0.5,
    "retry_backoff_s": 0.05,
    "block_ms": 200,
    "progress_interval_s": 0.0,
    "shutdown_grace_s": 2.0,
    "log_json": True,
}


def settings_for(redis_url: str, tmp: Path, worker_type: str = "diagnostic",
                 **overrides: Any) -> WorkerSettings:
    from schemas.catalogue import CATALOGUE

    values: dict[str, Any] = {
        "worker_type": worker_type,
        "model_framework": CATALOGUE[worker_type].framework,
        "redis_url": redis_url,
        "data_root": tmp / "data",
        "artifact_root": tmp / "artifacts",
        **FAST,
        **overrides,
    }
    (tmp / "data").mkdir(exist_ok=True)
    return WorkerSettings(**values)


@contextlib.asynccontextmanager
async def running_worker(settings: WorkerSettings, name: str | None = None,
                         devices: GpuDevices | None = None) -> AsyncIterator[Worker]:
    """A worker serving in this event loop until the block exits (then a graceful stop).
    ``devices`` (e.g. ``consumers.gpu.ScriptedDevices``) turns GPU admission on."""
    redis = client(settings.target)
    read_conn = client(settings.target, max_connections=1)
    worker = Worker(settings, load_framework(CATALOG_FRAMEWORK[settings.worker_type]), redis,
                    read_conn, name=name, devices=devices)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)
        await read_conn.aclose()
        await redis.aclose()


async def run_burst(settings: WorkerSettings, timeout: float = 60) -> Worker:
    """A worker in burst mode in this event loop: returns once it stopped by itself (the
    queue empty), so a test waits for the work without polling."""
    redis = client(settings.target)
    read_conn = client(settings.target, max_connections=1)
    worker = Worker(settings.model_copy(update={"burst": True}),
                    load_framework(CATALOG_FRAMEWORK[settings.worker_type]), redis, read_conn)
    try:
        await asyncio.wait_for(worker.run(), timeout)
    finally:
        await read_conn.aclose()
        await redis.aclose()
    return worker


class _Frameworks(dict[str, str]):
    def __missing__(self, key: str) -> str:
        from schemas.catalogue import CATALOGUE

        return CATALOGUE[key].framework


CATALOG_FRAMEWORK = _Frameworks()


def die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """SIGKILL this child when the test process dies without cleaning up (a pytest-timeout
    ends the run with os._exit), so no worker outlives its test session; Linux only."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn_worker(settings: WorkerSettings, log: Path,
                 argv: Sequence[str | Path] | None = None,
                 extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A worker in its own process (default: this python -m consumers; ``argv`` e.g. another
    environment's python, or ``aiq worker``), configured by env vars (plus ``extra_env``, e.g.
    the S3 credentials)."""
    env = {**os.environ, **(extra_env or {})}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    out = log.open("ab")
    proc = subprocess.Popen([str(a) for a in argv or (sys.executable, "-m", "consumers")],
                            env=env, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)  # noqa: PLW1509 - from the main thread
    SPAWNED.append(proc)
    return proc


@contextlib.contextmanager
def worker_process(settings: WorkerSettings, log: Path, grace_s: float = 60,
                   extra_env: Mapping[str, str] | None = None
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """``spawn_worker`` for the block, then SIGTERM (a graceful drain), killed after
    ``grace_s``."""
    proc = spawn_worker(settings, log, extra_env=extra_env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


SPAWNED: list[subprocess.Popen[bytes]] = []  # reaped after each test module (conftest)


def reap_spawned() -> None:
    """Kill the workers a test spawned and left running (e.g. it failed before stopping them)."""
    for proc in SPAWNED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    SPAWNED.clear()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0,
                     interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def results_within(producer: Any, jobs: dict[str, str], seconds: float
                         ) -> dict[str, dict[str, Any]]:
    """Each job's result (key -> result), all within one deadline: a module's training
    fixture waits ``seconds`` in all, sized below the module's pytest timeout so that a slow
    run fails on this deadline with a clear message, never on the timer."""
    deadline = time.monotonic() + seconds
    return {key: await producer.result(job_id, timeout=max(1.0, deadline - time.monotonic()))
            for key, job_id in jobs.items()}
