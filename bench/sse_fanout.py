"""Many SSE clients on one gateway process following live jobs: the gateway's Redis connections
and the delay from the worker's XADD of an event to a client receiving it, next to raw
``XREAD BLOCK`` readers on the same Redis in the same time window.

    uv run python -m bench.sse_fanout [--clients 1000] [--jobs 50] [--procs 2] [--http raw]

Prints tables and a one-line summary; never asserts a target (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import platform
import queue
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as MPQueue
from pathlib import Path
from typing import IO, Any, cast

import httpx
import orjson
import psutil
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from aiq.redis_server import RedisServer
from bench._redis import KEYS, WorkerProcess, client, cpu_seconds, percentile, private_redis
from bench._redis import workdir as make_workdir
from gateway.app import REDIS_CLIENT_NAME
from gateway.hub import HUB_CLIENT_NAME
from schemas.events import TERMINAL_EVENTS

console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)
TERMINAL = frozenset(str(e) for e in TERMINAL_EVENTS)
SAMPLE_S = 0.1  # connection / memory sampling period

# One received event: (entry id, event type, ts written by the script (ms), receive time (ms)).
Received = tuple[str, str, int, float]


# ---- SSE clients (run in the client processes) ----------------------------------------------


@dataclass
class StreamResult:
    job_id: str
    status: int = 0
    error: str = ""
    ended: bool = False  # the server ended the stream (after the terminal event)
    events: list[Received] = field(default_factory=list)


class _SSEParser:
    """SSE text -> events; ``feed`` returns the complete frames of ``text`` (comments skipped)."""

    def __init__(self, out: list[Received]) -> None:
        self.out = out
        self.rest = ""

    def feed(self, text: str, now_ms: float) -> int:
        frames = (self.rest + text).split("\n\n")
        self.rest = frames.pop()
        got = 0
        for frame in frames:
            entry_id = event = data = ""
            for line in frame.split("\n"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    entry_id = value
                elif name == "event":
                    event = value
                elif name == "data":
                    data = value
            if data:
                self.out.append((entry_id, event, int(orjson.loads(data)["ts"]), now_ms))
                got += 1
        return got


class RawSSEClient(asyncio.Protocol):
    """A minimal HTTP/1.1 client for one SSE stream (chunked transfer encoding): so that the
    client side costs as little CPU as possible and the receive time is taken when the bytes
    are read off the socket."""

    def __init__(self, host: str, port: int, result: StreamResult) -> None:
        self.request = (f"GET /jobs/{result.job_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        "Accept: text/event-stream\r\n\r\n").encode()
        self.result = result
        self.parser = _SSEParser(result.events)
        self.buf = b""
        self.headers_done = False
        self.chunk: int | None = None  # bytes left of the current chunk; None: size line next
        self.first = asyncio.Event()  # the first event frame arrived
        self.closed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000
        self.buf += data
        if not self.headers_done and not self._headers():
            return
        text = self._dechunk()
        if text and self.parser.feed(text, now_ms):
            self.first.set()
        if self.result.ended and self.transport is not None:
            self.transport.close()

    def _headers(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        self.headers_done = True
        self.result.status = int(head.split(" ", 2)[1])
        if self.result.status != 200 or "transfer-encoding: chunked" not in head.lower():
            self.result.error = head.split("\r\n", 1)[0]
            assert self.transport is not None
            self.transport.close()
            return False
        return True

    def _dechunk(self) -> str:
        out: list[bytes] = []
        while not self.result.ended:
            if self.chunk is None:
                eol = self.buf.find(b"\r\n")
                if eol < 0:
                    break
                self.chunk = int(self.buf[:eol].split(b";")[0], 16)
                self.buf = self.buf[eol + 2:]
                if self.chunk == 0:
                    self.result.ended = True
                    break
            if len(self.buf) < self.chunk + 2:
                break
            out.append(self.buf[:self.chunk])
            self.buf, self.chunk = self.buf[self.chunk + 2:], None
        return b"".join(out).decode()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.result.error:
            self.result.error = repr(exc)
        self.first.set()
        self.closed.set()


async def _follow_raw(host: str, port: int, result: StreamResult,
                      connected: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    try:
        _, proto = await loop.create_connection(
            lambda: RawSSEClient(host, port, result), host, port)
    except OSError as exc:
        result.error = repr(exc)
        connected.set()
        return
    await proto.first.wait()
    connected.set()
    await proto.closed.wait()


async def _follow_httpx(http: httpx.AsyncClient, result: StreamResult,
                        connected: asyncio.Event) -> None:
    parser = _SSEParser(result.events)
    try:
        async with http.stream("GET", f"/jobs/{result.job_id}/events") as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = (await response.aread()).decode(errors="replace")[:200]
                return
            async for line in response.aiter_lines():
                if parser.feed(line + "\n", time.time() * 1000):
                    connected.set()
            result.ended = True
    except httpx.HTTPError as exc:
        result.error = repr(exc)
    finally:
        connected.set()


async def _after(delay_s: float, follow: Awaitable[None]) -> None:
    await asyncio.sleep(delay_s)
    await follow


async def _clients(host: str, port: int, job_ids: list[str], http_client: str,
                   timeout_s: float, connect_over_s: float, out: MPQueue[Any]) -> None:
    results = [StreamResult(job_id) for job_id in job_ids]
    connected = [asyncio.Event() for _ in results]
    gap_s = connect_over_s / len(results)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        if http_client == "httpx":
            http = await stack.enter_async_context(httpx.AsyncClient(
                base_url=f"http://{host}:{port}", timeout=httpx.Timeout(timeout_s),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)))
            follows = [_follow_httpx(http, r, c) for r, c in zip(results, connected, strict=True)]
        else:
            follows = [_follow_raw(host, port, r, c)
                       for r, c in zip(results, connected, strict=True)]
        tasks = [asyncio.create_task(_after(i * gap_s, f)) for i, f in enumerate(follows)]
        for event in connected:
            await event.wait()
        out.put(("connected", os.getpid(), sum(bool(r.events) for r in results),
                 time.monotonic() - started))  # plain tuples: the classes live in __mp_main__
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    rows = [(r.job_id, r.status, r.error, r.ended, r.events) for r in results]
    out.put(("done", os.getpid(), rows, time.process_time()))


def client_process(host: str, port: int, job_ids: list[str], http_client: str,
                   timeout_s: float, connect_over_s: float, out: MPQueue[Any]) -> None:
    """Entry point of one client process: follows ``job_ids`` (one SSE stream each), opening
    them evenly over ``connect_over_s`` (0: all at once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    coro = _clients(host, port, job_ids, http_client, timeout_s, connect_over_s, out)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


# ---- the raw reference (in the benchmark process) --------------------------------------------


async def raw_reader(url: str, job_id: str, out: list[Received], timeout_s: float) -> None:
    """One job's events stream with ``XREAD BLOCK`` on a connection of its own, from the start
    until the terminal event."""
    redis = client(url, max_connections=1)
    stream, last = KEYS.job_events(job_id), "0-0"
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            got = await redis.xread({stream: last}, count=100, block=1000)
            now_ms = time.time() * 1000
            for _, entries in got or []:
                for entry_id, fields in entries:
                    out.append((entry_id, fields["type"], int(fields["ts"]), now_ms))
                    last = entry_id
                    if fields["type"] in TERMINAL:
                        return
    finally:
        await redis.aclose()


# ---- the gateway process and its Redis connections -------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class GatewayProcess:
    """``python -m gateway`` configured by env vars, as an operator would start it."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url, self.port = url, free_port()
        self.log_path = workdir / "gateway.log"
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = {**os.environ, "REDIS_URL": self.url, "HOST": "127.0.0.1",
               "PORT": str(self.port), "LOG_LEVEL": "warning"}
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "gateway"], env=env,
                                        stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def wait_ready(self, redis: Redis, timeout: float = 30.0) -> None:
        """/health answers 200 and the hub's connection shows in CLIENT LIST."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"gateway exited ({self.process.returncode}):\n"
                                       f"{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    healthy = (await http.get("/health")).status_code == 200
                    if healthy and (await connections(redis, self.pid, 0)).hub:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gateway not ready after {timeout} s:\n{self.tail()}")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Connections:
    pool: int  # CLIENT LIST entries named aiq-gateway (the request pool)
    hub: int  # ... named aiq-gateway-hub (the live reader)
    sockets: int  # TCP sockets of the gateway process to the Redis port (cross-check)

    @property
    def total(self) -> int:
        return self.pool + self.hub

    def __str__(self) -> str:
        return f"{self.total} ({self.pool} pool + {self.hub} hub; {self.sockets} sockets)"


async def connections(redis: Redis, pid: int, redis_port: int) -> Connections:
    pool = hub = 0
    for info in await redis.client_list():
        pool += info.get("name") == REDIS_CLIENT_NAME
        hub += info.get("name") == HUB_CLIENT_NAME
    sockets = 0
    if redis_port:
        with contextlib.suppress(psutil.Error):
            sockets = sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
                          if c.raddr and c.raddr.port == redis_port
                          and c.status == psutil.CONN_ESTABLISHED)
    return Connections(pool, hub, sockets)


@dataclass
class Sampler:
    """Samples the gateway's connections and RSS every SAMPLE_S; keeps the peaks per phase."""

    redis: Redis
    pid: int
    redis_port: int
    phase: str = "before"
    peak: dict[str, Connections] = field(default_factory=dict)
    rss_peak: dict[str, int] = field(default_factory=dict)
    stopped: bool = False

    async def sample(self, sockets: bool = False) -> Connections:
        """``sockets``: also count the gateway's sockets (slow with 1,000 clients: not in the
        periodic samples, which must not stall the raw readers in this process)."""
        now = await connections(self.redis, self.pid, self.redis_port if sockets else 0)
        old = self.peak.get(self.phase)
        if old is None or now.total > old.total or now.sockets > old.sockets:
            self.peak[self.phase] = now
        with contextlib.suppress(psutil.Error):
            rss = psutil.Process(self.pid).memory_info().rss
            self.rss_peak[self.phase] = max(self.rss_peak.get(self.phase, 0), rss)
        return now

    async def run(self) -> None:
        """Until ``stopped`` is set (not cancelled: redis-py may swallow a cancellation)."""
        while not self.stopped:
            await self.sample()
            await asyncio.sleep(SAMPLE_S)


# ---- the run ----------------------------------------------------------------------------------


class SleepWorker(WorkerProcess):
    def __init__(self, url: str, concurrency: int, workdir: Path, progress_s: float) -> None:
        super().__init__(url, concurrency, workdir)
        self.progress_s = progress_s

    def env(self) -> dict[str, str]:
        return {**super().env(), "PROGRESS_INTERVAL_S": str(self.progress_s)}


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


@dataclass
class Cpu:
    """CPU seconds of some processes (and of the whole machine: ``machine``) at one moment."""

    at: float
    seconds: dict[str, float]

    @staticmethod
    def take(pids: dict[str, int | None]) -> Cpu:
        seconds = {name: cpu_seconds(pid) for name, pid in pids.items()}
        return Cpu(time.monotonic(), {**seconds, "machine": machine_busy_s()})

    def share(self, later: Cpu, name: str) -> float:
        """Cores used by ``name`` between this snapshot and ``later``."""
        return (later.seconds[name] - self.seconds[name]) / (later.at - self.at)

    def shares(self, later: Cpu) -> dict[str, float]:
        """Cores used by each process, by the rest of the machine (``other``), in all."""
        ours = {n: self.share(later, n) for n in self.seconds if n != "machine"}
        busy = self.share(later, "machine")
        return {**ours, "other": max(busy - sum(ours.values()), 0.0), "machine": busy}


@dataclass
class Outcome:
    args: argparse.Namespace
    redis_version: str
    load_before: float  # share of the machine's CPUs busy just before the run (0..1)
    sse: list[StreamResult] = field(default_factory=list)  # in client order
    raw: dict[str, list[Received]] = field(default_factory=dict)
    stored: dict[str, list[str]] = field(default_factory=dict)  # job id -> its events' ids
    live_from_ms: float = 0.0
    conns: dict[str, Connections] = field(default_factory=dict)
    peaks: dict[str, Connections] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    connect_s: float = 0.0
    connect_cpu_s: float = 0.0  # gateway CPU seconds spent while the clients connected
    cpu_live: dict[str, float] = field(default_factory=dict)
    live_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


async def submit_jobs(base_url: str, n: int, seconds: float, steps: int) -> list[str]:
    body = {"model_type": "sleep", "hyperparameters": {"seconds": seconds, "steps": steps}}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        async def one() -> str:
            r = await http.post("/jobs/training", json=body)
            r.raise_for_status()
            job_id: str = r.json()["job_id"]
            return job_id
        ids: list[str] = []
        for start in range(0, n, 8):  # a few at a time, like a handful of callers
            ids += await asyncio.gather(*(one() for _ in range(min(8, n - start))))
    return ids


async def _messages(q: MPQueue[Any], kind: str, count: int, timeout: float,
                    procs: list[Any]) -> list[tuple[Any, ...]]:
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        try:
            msg = await asyncio.to_thread(q.get, True, 0.5)
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a client process failed") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)}/{count} client processes reported {kind!r} "
                                   f"after {timeout:.0f} s") from None
            continue
        if msg[0] != kind:
            raise RuntimeError(f"unexpected message {msg[0]!r} (waiting for {kind!r})")
        got.append(msg)
    return got


class Bench:
    """One run: Redis, the gateway, the jobs, the client processes, the worker, in order."""

    def __init__(self, args: argparse.Namespace, server: RedisServer, tmp: Path) -> None:
        self.args, self.server = args, server
        self.redis = client(server.url)
        self.gateway = GatewayProcess(server.url, tmp)
        self.worker = SleepWorker(server.url, args.jobs, tmp, args.progress_interval)
        self.ctx = mp.get_context("spawn")
        self.out: MPQueue[Any] = self.ctx.Queue()
        self.procs: list[Any] = []
        self.sampler: Sampler | None = None
        self.sampler_task: asyncio.Task[None] | None = None
        self.stream_timeout = args.seconds + 60
        self.jobs: list[str] = []
        self.pids: dict[str, int | None] = {}

    async def run(self, o: Outcome) -> None:
        await self.setup(o)
        await self.connect(o)
        done = await self.live(o)
        await self.finish(o, done)

    async def setup(self, o: Outcome) -> None:
        o.redis_version = (await self.redis.info("server"))["redis_version"]
        self.gateway.start()
        await self.gateway.wait_ready(self.redis)
        self.sampler = Sampler(self.redis, self.gateway.pid, self.server.port)
        a = self.args
        self.jobs = await submit_jobs(self.gateway.base_url, a.jobs, a.seconds, a.steps)
        await asyncio.sleep(0.2)
        o.conns["before"] = await self.sampler.sample(sockets=True)
        self.sampler_task = asyncio.create_task(self.sampler.run())
        self.pids = {"gateway": self.gateway.pid, "bench": os.getpid(),
                     "redis": self.server.pid}

    async def connect(self, o: Outcome) -> None:
        """Every SSE client connects at once and gets the job's history (its queued event)."""
        assert self.sampler is not None
        a = self.args
        assignment = [self.jobs[i % a.jobs] for i in range(a.clients)]
        cpu0 = Cpu.take(self.pids)
        self.sampler.phase = "connect"
        for p in range(a.procs):
            proc = self.ctx.Process(target=client_process, daemon=True, args=(
                "127.0.0.1", self.gateway.port, assignment[p::a.procs], a.http,
                self.stream_timeout, a.connect_over, self.out))
            proc.start()
            self.procs.append(proc)
        ready = await _messages(self.out, "connected", a.procs, 120, self.procs)
        o.connect_s = max(m[3] for m in ready)
        cpu1 = Cpu.take(self.pids)
        o.connect_cpu_s = cpu1.seconds["gateway"] - cpu0.seconds["gateway"]
        if (n := sum(m[2] for m in ready)) < a.clients:
            o.warnings.append(f"only {n} of {a.clients} SSE streams got their first event")
        self.sampler.phase = "connected"
        await asyncio.sleep(0.3)
        o.conns["connected"] = await self.sampler.sample(sockets=True)

    async def live(self, o: Outcome) -> list[tuple[Any, ...]]:
        """The raw reference readers, then the worker: every event from here on is live."""
        assert self.sampler is not None
        o.raw = {j: [] for j in self.jobs}
        raw_tasks = [asyncio.create_task(raw_reader(self.server.url, j, o.raw[j],
                                                    self.stream_timeout)) for j in self.jobs]
        await asyncio.sleep(0.3)
        o.live_from_ms = time.time() * 1000
        self.sampler.phase = "live"
        self.worker.start()
        await self.worker.wait_registered(self.redis)
        self.pids.update({f"client {i + 1}": p.pid for i, p in enumerate(self.procs)},
                         worker=self.worker.pid)
        cpu2 = Cpu.take(self.pids)
        done = await _messages(self.out, "done", self.args.procs, self.stream_timeout + 30,
                               self.procs)
        cpu3 = Cpu.take(self.pids)
        for i, proc in enumerate(self.procs):  # it may have exited already: its own count
            cpu3.seconds[f"client {i + 1}"] = next(m[3] for m in done if m[1] == proc.pid)
        o.cpu_live, o.live_s = cpu2.shares(cpu3), cpu3.at - cpu2.at
        await asyncio.gather(*raw_tasks)
        return done

    async def finish(self, o: Outcome, done: list[tuple[Any, ...]]) -> None:
        assert self.sampler is not None
        for proc in self.procs:
            proc.join(10)
        self.sampler.phase = "after"
        await asyncio.sleep(0.5)  # the gateway notices the closed streams
        o.conns["after"] = await self.sampler.sample(sockets=True)
        o.peaks, o.rss = self.sampler.peak, self.sampler.rss_peak
        o.stored = {j: [e for e, _ in await self.redis.xrange(KEYS.job_events(j))]
                    for j in self.jobs}
        # client i's stream is in process i % procs, at position i // procs
        pid_order = [p.pid for p in self.procs]
        per_proc = {m[1]: [StreamResult(*r) for r in m[2]] for m in done}
        o.sse = [per_proc[pid_order[i % self.args.procs]][i // self.args.procs]
                 for i in range(self.args.clients)]

    async def close(self, o: Outcome) -> None:
        if self.sampler is not None and self.sampler_task is not None:
            self.sampler.stopped = True
            await asyncio.wait([self.sampler_task], timeout=5)
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
        self.worker.stop()
        self.gateway.stop()
        await self.redis.aclose()
        self.out.close()
        self.out.join_thread()
        if self.worker.warnings().strip():
            o.warnings.append("worker log: " + self.worker.warnings())
        if self.gateway.tail().strip():
            o.warnings.append("gateway log: " + self.gateway.tail())


async def run(args: argparse.Namespace) -> Outcome:
    o = Outcome(args, "", psutil.cpu_percent(interval=1.0) / 100)
    with private_redis(args.redis_server) as server, make_workdir() as tmp:
        bench = Bench(args, server, Path(tmp))
        try:
            await bench.run(o)
        finally:
            await bench.close(o)
    return o


# ---- report -----------------------------------------------------------------------------------


@dataclass
class Delays:
    samples: list[float]

    def __post_init__(self) -> None:
        self.samples.sort()

    def p(self, q: float) -> float:
        return percentile(self.samples, q)

    @property
    def max(self) -> float:
        return self.samples[-1] if self.samples else float("nan")

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else float("nan")


def live_events(streams: Iterable[list[Received]], live_from_ms: float) -> list[Received]:
    """Events written after the worker was started (not the history replayed on connect)."""
    return [e for events in streams for e in events if e[2] >= live_from_ms]


def delays(events: list[Received]) -> Delays:
    return Delays([recv - ts for _, _, ts, recv in events])


def p99_by_second(events: list[Received]) -> list[tuple[int, float]]:
    """(events, p99 delay) of each second of the live window, by event ts."""
    if not events:
        return []
    first = min(ts for _, _, ts, _ in events)
    buckets: dict[int, list[float]] = {}
    for _, _, ts, recv in events:
        buckets.setdefault(int((ts - first) // 1000), []).append(recv - ts)
    return [(len(v), percentile(sorted(v), 99)) for _, v in sorted(buckets.items())]


@dataclass
class Check:
    expected: int = 0  # events stored, summed over every stream that followed the job
    received: int = 0
    missing: int = 0
    extra: int = 0  # duplicates or ids the job's stream does not hold
    unordered: int = 0  # streams whose ids are not strictly increasing
    unended: int = 0  # streams the server did not end / readers without the terminal event
    errors: list[str] = field(default_factory=list)

    def add(self, ids: list[str], stored: list[str], ended: bool, error: str) -> None:
        self.expected += len(stored)
        self.received += len(ids)
        want, got = set(stored), set(ids)
        self.missing += len(want - got)
        self.extra += len(ids) - len(got & want)
        keys = [tuple(int(x) for x in i.split("-")) for i in ids]
        self.unordered += any(a >= b for a, b in itertools.pairwise(keys))
        self.unended += not ended
        if error:
            self.errors.append(error)


def checks(o: Outcome) -> tuple[Check, Check]:
    sse, raw = Check(), Check()
    for r in o.sse:
        sse.add([e[0] for e in r.events], o.stored.get(r.job_id, []), r.ended,
                r.error or ("" if r.status == 200 else f"HTTP {r.status}"))
    for job_id, events in o.raw.items():
        raw.add([e[0] for e in events], o.stored[job_id],
                bool(events) and events[-1][1] in TERMINAL, "")
    return sse, raw


def _ms(v: float) -> str:
    return f"{v:,.1f}"


def _table(title: str, columns: tuple[str, ...]) -> Table:
    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    return t


def delay_table(o: Outcome, sse: Delays, raw: Delays) -> Table:
    t = _table("delay: worker's XADD (event ts, Redis clock) -> client receives it, ms",
               ("path", "events", "p50", "p90", "p99", "p99.9", "max", "mean"))
    qs = (50, 90, 99, 99.9)
    for name, d in ((f"SSE via gateway ({o.args.clients} clients)", sse),
                    (f"raw XREAD BLOCK ({len(o.raw)} readers, reference)", raw)):
        t.add_row(name, f"{len(d.samples):,}", *(_ms(d.p(q)) for q in qs), _ms(d.max),
                  _ms(d.mean))
    t.add_row("SSE / raw", "", *(f"{sse.p(q) / raw.p(q):.1f}x" for q in qs),
              f"{sse.max / raw.max:.1f}x", f"{sse.mean / raw.mean:.1f}x")
    return t


def connection_rows(o: Outcome) -> list[tuple[str, Connections]]:
    rows = [("before the clients (jobs submitted)", o.conns.get("before")),
            ("peak while the clients connect", o.peaks.get("connect")),
            (f"all {o.args.clients} connected", o.conns.get("connected")),
            ("peak while the jobs run (live)", o.peaks.get("live")),
            ("after every stream ended", o.conns.get("after"))]
    return [(name, c) for name, c in rows if c is not None]


def connection_table(o: Outcome) -> Table:
    t = _table("the gateway's Redis connections (CLIENT LIST by name; TCP sockets of its pid)",
               ("moment", "total", "pool (aiq-gateway)", "hub (aiq-gateway-hub)", "sockets"))
    for name, c in connection_rows(o):
        t.add_row(name, str(c.total), str(c.pool), str(c.hub),
                  str(c.sockets) if c.sockets else "-")
    return t


def check_table(o: Outcome, sse: Check, raw: Check) -> Table:
    t = _table("completeness (event ids received vs the job's events stream at the end)",
               ("path", "streams", "expected", "received", "missing", "extra/dup",
                "out of order", "not ended", "errors"))
    for name, chk, n in (("SSE", sse, len(o.sse)), ("raw XREAD", raw, len(o.raw))):
        t.add_row(name, f"{n:,}", f"{chk.expected:,}", f"{chk.received:,}", str(chk.missing),
                  str(chk.extra), str(chk.unordered), str(chk.unended), str(len(chk.errors)))
    return t


def resource_lines(o: Outcome, sse_live: int) -> list[str]:
    a, cpus = o.args, psutil.cpu_count() or 1
    live, gw_cpu = o.cpu_live, o.cpu_live.get("gateway", 0.0)
    lines = [
        f"connect {'burst' if not a.connect_over else f'spread over {a.connect_over:g} s'}: "
        f"{a.clients} streams opened in {o.connect_s:.2f} s (slowest client "
        f"process), gateway CPU {o.connect_cpu_s:.2f} s "
        f"({o.connect_cpu_s / a.clients * 1000:.2f} ms per stream opened)",
        f"live window {o.live_s:.1f} s (worker registered -> every stream ended): "
        f"{sse_live / o.live_s:,.0f} live SSE events/s delivered, gateway CPU "
        f"{gw_cpu * o.live_s / max(sse_live, 1) * 1e6:.0f} µs per event delivered",
        "CPU in the live window (cores): " + ", ".join(f"{n} {v:.2f}" for n, v in live.items()),
        "gateway RSS (MiB, peak per phase): " + ", ".join(
            f"{phase} {rss / 2**20:.0f}" for phase, rss in o.rss.items()),
    ]
    if o.load_before > 0.2:
        lines.append(f"[yellow]note[/]: the machine was {o.load_before:.0%} busy before the run "
                     "(other processes): the numbers are noisy")
    busy = [n for n, v in live.items() if n.startswith("client") and v >= 0.85]
    if busy:
        lines.append(f"[yellow]note[/]: {', '.join(busy)} used ≥ 0.85 of a core: the SSE delays "
                     "include queueing in the client process itself")
    if live.get("machine", 0) >= 0.85 * cpus:
        lines.append(f"[yellow]note[/]: the machine was saturated ({live['machine']:.2f} of "
                     f"{cpus} cores busy, {live['other']:.2f} of them outside this benchmark)")
    return lines


def report(o: Outcome) -> None:
    a = o.args
    sse_live = live_events((r.events for r in o.sse), o.live_from_ms)
    sse_d, raw_d = delays(sse_live), delays(live_events(o.raw.values(), o.live_from_ms))
    sse_c, raw_c = checks(o)
    console.print(f"[bold]SSE fan-out[/]: {a.clients} SSE clients on one gateway process "
                  f"(`python -m gateway`), {a.jobs} live `sleep` jobs ({a.seconds:g} s, "
                  f"{a.steps} steps, PROGRESS_INTERVAL_S={a.progress_interval:g}), "
                  f"{a.clients / a.jobs:g} clients per job; client: {a.http} "
                  f"in {a.procs} process(es); Redis {o.redis_version}; Python "
                  f"{platform.python_version()}; {psutil.cpu_count()} CPUs")
    console.print(delay_table(o, sse_d, raw_d))
    console.print("SSE p99 per second of the live window (events, ms): " + ", ".join(
        f"{n:,}: {_ms(p99)}" for n, p99 in p99_by_second(sse_live)))
    console.print(connection_table(o))
    console.print(check_table(o, sse_c, raw_c))
    for line in resource_lines(o, len(sse_live)):
        console.print(line)
    for error in sorted(set(sse_c.errors))[:5]:
        console.print(f"[red]SSE error[/]: {error}")
    for warning in o.warnings:
        console.print(f"[yellow]warning[/]: {warning}")
    c = o.conns
    console.print(
        f"[bold]summary[/]: {a.clients} SSE clients / {a.jobs} jobs: gateway Redis connections "
        f"before {c['before'].total}, all connected {c['connected'].total}, after "
        f"{c['after'].total} (max {max(x.total for _, x in connection_rows(o))}; hub "
        f"{c['connected'].hub}); SSE delay p50 {_ms(sse_d.p(50))} / p99 {_ms(sse_d.p(99))} / "
        f"max {_ms(sse_d.max)} ms vs raw XREAD p50 {_ms(raw_d.p(50))} / p99 {_ms(raw_d.p(99))} "
        f"/ max {_ms(raw_d.max)} ms (p99 {sse_d.p(99) / raw_d.p(99):.1f}x; issue's target p99 "
        f"< 100 ms); lost {sse_c.missing} of {sse_c.expected:,} events")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.sse_fanout", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000, help="concurrent SSE clients")
    ap.add_argument("--jobs", type=int, default=50, help="live jobs, followed round-robin")
    ap.add_argument("--seconds", type=float, default=5.0, help="each sleep job's duration")
    ap.add_argument("--steps", type=int, default=50, help="progress steps of each job")
    ap.add_argument("--progress-interval", type=float, default=0.05,
                    help="the worker's PROGRESS_INTERVAL_S")
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--http", choices=("raw", "httpx"), default="raw",
                    help="SSE client: a minimal asyncio HTTP/1.1 protocol, or httpx streams")
    ap.add_argument("--connect-over", type=float, default=0.0, metavar="SECONDS",
                    help="open the SSE streams evenly over this long (default: all at once)")
    ap.add_argument("--redis-server", default=None, help="redis-server binary")
    args = ap.parse_args(argv)
    if args.jobs < 1 or args.clients < 1 or args.procs < 1:
        ap.error("--jobs, --clients and --procs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    report(asyncio.run(run(parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
