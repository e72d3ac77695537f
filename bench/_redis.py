"""Helpers of the benchmark: a private Redis server, clients, and the processes it drives.

Nothing here touches the shared Redis on port 6379: every run starts its own ``redis-server``
on a free port, in-memory only (no AOF, no RDB snapshots), and removes it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Literal

import psutil
from redis.asyncio import Redis

from aiq.redis_server import RedisServer
from streams.connection import client as aiq_client
from streams.keys import DEFAULT_PREFIX, QueueKeys

WORKER_TYPE = "diagnostic"
KEYS = QueueKeys(WORKER_TYPE, DEFAULT_PREFIX)


@contextlib.contextmanager
def private_redis(executable: str | None = None) -> Iterator[RedisServer]:
    """A throw-away ``redis-server`` on a free port: appendonly=no and no snapshots, so the
    numbers measure the queue, not the disk. ``executable``: which binary (default: the one
    aiq.redis_server picks)."""
    with RedisServer(appendonly=False, executable=executable) as server:
        yield server


def client(url: str, **kwargs: object) -> Redis:
    """An asyncio client as aiq's processes make them (hiredis parser and command packer,
    decoded replies); the raw reference loop uses the same one."""
    return aiq_client(url, **kwargs)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, by linear interpolation."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


Profiler = Literal["cprofile", "py-spy"]


class WorkerProcess:
    """One ``python -m consumers`` process of the diagnostic type, configured by env vars as
    an operator would start it.

    ``profiler="cprofile"`` runs it as ``python -m bench._profiled_worker`` (cProfile of the
    event-loop thread, imports excluded); ``"py-spy"`` attaches ``py-spy record`` (on-CPU
    samples of every thread, as collapsed stacks) once the worker has registered. Either
    profile is written to ``profile_path`` when the worker exits after SIGTERM.
    """

    def __init__(
        self,
        url: str,
        concurrency: int,
        workdir: Path,
        profiler: Profiler | None = None,
        profile_path: Path | None = None,
        source: Path | None = None,
        cpus: str | None = None,
    ) -> None:
        self.url = url
        self.source = source  # another checkout whose worker code runs (None: this one)
        self.cpus = cpus  # WORKER_CPUS (None: not set)
        self.concurrency = concurrency
        self.workdir = workdir
        self.profiler = profiler
        self.profile_path = profile_path
        self.log_path = workdir / f"worker-{concurrency}-{time.monotonic_ns()}.log"
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.spy: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        source = {} if self.source is None else {
            "PYTHONPATH": os.pathsep.join([str(self.source), os.environ.get("PYTHONPATH", "")])}
        return {
            **os.environ,
            **source,
            "WORKER_TYPE": WORKER_TYPE,
            "MODEL_FRAMEWORK": "diagnostic",
            "REDIS_URL": self.url,
            "REDIS_PREFIX": DEFAULT_PREFIX,
            "MAX_CONCURRENT_JOBS": str(self.concurrency),
            "LOG_LEVEL": "WARNING",
            "LOG_JSON": "true",
            "DATA_ROOT": str(self.workdir / "data"),
            "ARTIFACT_ROOT": str(self.workdir / "artifacts"),
            "SHUTDOWN_GRACE_S": "10",
            **({"WORKER_CPUS": self.cpus} if self.cpus else {}),
        }

    def start(self) -> None:
        module = ["-m", "consumers"]
        if self.profiler == "cprofile":
            module = ["-m", "bench._profiled_worker", str(self.profile_path)]
        # Another checkout's worker may not know WORKER_CPUS: taskset confines it the same way
        # (the process and every thread it starts).
        taskset = ["taskset", "-c", self.cpus] if self.cpus and self.source else []
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*taskset, sys.executable, *module], env=self.env(), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.source,
        )

    def attach_py_spy(self) -> None:
        """Start sampling the running worker (until it exits); needs ``py-spy`` on PATH, e.g.
        ``uv run --with py-spy python -m bench.queue_bench --profile py-spy``."""
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("py-spy is not on PATH: run the benchmark with "
                               "`uv run --with py-spy python -m bench.queue_bench ...`")
        assert self.process is not None and self._log is not None
        self.spy = subprocess.Popen(
            [exe, "record", "--pid", str(self.process.pid), "--format", "raw", "--rate", "250",
             "--nonblocking", "--threads", "--output", str(self.profile_path)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        time.sleep(0.5)  # py-spy needs a moment to attach; the queue is still full

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"worker exited with code {self.process.returncode}; "
                               f"tail of {self.log_path}:\n{_tail(self.log_path)}")

    async def wait_registered(self, redis: Redis, timeout: float = 30.0) -> None:
        """Until the worker has created its group and registered (its loops start next)."""
        deadline = time.monotonic() + timeout
        while not await redis.scard(KEYS.workers):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not registered after {timeout} s; tail of "
                                   f"{self.log_path}:\n{_tail(self.log_path)}")
            await asyncio.sleep(0.005)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (graceful: drain, deregister, write the profile), SIGKILL after timeout."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.spy is not None:
            try:
                self.spy.wait(timeout)  # writes its output once the worker is gone
            except subprocess.TimeoutExpired:
                self.spy.send_signal(signal.SIGINT)
                self.spy.wait()
            self.spy = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def warnings(self) -> str:
        """Whatever the worker logged (at LOG_LEVEL=WARNING only problems are logged)."""
        return _tail(self.log_path, 10)


class EchoProcess:
    """The raw latency loop's consumer, in its own process like an aiq worker
    (``python -m bench._echo``)."""

    def __init__(self, url: str, stream: str, reply: str, group: str) -> None:
        self.args = [url, stream, reply, group]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._echo", *self.args], stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="aiq-bench-")
