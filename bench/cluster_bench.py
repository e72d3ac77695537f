"""The same no-op jobs on one Redis and on a 3-master Redis Cluster (a replica each), and the
cost of durable submit (``wait_replicas=1``) on a Sentinel master + replica and on the cluster.

    uv run python -m bench.cluster_bench [--jobs 4000] [--types 3] [--rounds 3]
                                         [--durable-submits 2000] [--latency-iterations 500]
    uv run python -m bench.cluster_bench --jobs 500 --rounds 1     # quick look

Every figure is a ratio against a reference measured in the same run (cluster / single,
wait_replicas=1 / wait_replicas=0); nothing is asserted (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import redis as redis_py
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError
from rich.console import Console
from rich.table import Table

from aiq.redis_server import HOST, RedisServer
from aiq.redis_topologies import LocalCluster, LocalSentinel
from bench._redis import WorkerProcess, client, cpu_seconds, percentile, private_redis, workdir
from bench._typed_worker import register
from schemas.requests import TrainingRequest
from schemas.status import JobKind
from streams import scripts
from streams.connection import is_cluster, on_one_connection
from streams.keys import DEFAULT_PREFIX, GROUP, QueueKeys
from streams.producer import Producer

console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)
POLL_S = 0.01
TYPE_PREFIX = "bench-"
PAUSE_WARN_S = 15.0  # the workers' heartbeat TTL (3 x HEARTBEAT_INTERVAL_S); the lease is 30 s


# ---- worker types spread over the masters -------------------------------------------------


def cluster_slot_ranges(port: int) -> list[tuple[int, int, int]]:
    """(first slot, last slot, master port) of every slot range, by first slot."""
    with redis_py.Redis(host=HOST, port=port, decode_responses=True) as r:
        slots = r.execute_command("CLUSTER SLOTS")
    return sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)


def spread_types(n: int, ranges: Sequence[tuple[int, int, int]]) -> list[str]:
    """``n`` type names, ``bench-<i>``, whose hash tags ``{name}`` fall on the masters in turn
    (type k on master k mod masters): the load of one worker per type spreads evenly."""
    masters = sorted({port for _, _, port in ranges})
    chosen: list[str] = []
    i = 0
    while len(chosen) < n:
        want = masters[len(chosen) % len(masters)]
        while True:
            name = f"{TYPE_PREFIX}{i}"
            i += 1
            slot = key_slot(f"{{{name}}}".encode())
            if any(lo <= slot <= hi and port == want for lo, hi, port in ranges):
                chosen.append(name)
                break
    return chosen


def master_port_of(name: str, ranges: Sequence[tuple[int, int, int]]) -> int:
    slot = key_slot(f"{{{name}}}".encode())
    return next(port for lo, hi, port in ranges if lo <= slot <= hi)


class TypedWorker(WorkerProcess):
    """``python -m bench._typed_worker NAME``: a worker of one simulated type."""

    def __init__(self, url: str, worker_type: str, concurrency: int, tmp: Path) -> None:
        super().__init__(url, concurrency, tmp)
        self.worker_type = worker_type
        self.keys = QueueKeys(worker_type, DEFAULT_PREFIX)
        self.log_path = tmp / f"worker-{worker_type}-{time.monotonic_ns()}.log"

    def env(self) -> dict[str, str]:
        return {**super().env(), "WORKER_TYPE": self.worker_type}

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._typed_worker", self.worker_type], env=self.env(),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    async def wait_registered_as(self, redis: Redis, timeout: float = 60.0) -> None:
        """Until this type's worker has created its group and registered."""
        deadline = time.monotonic() + timeout
        while not await redis.scard(self.keys.workers):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.worker_type} worker not registered after {timeout} s;"
                                   f" log:\n{self.warnings()}")
            await asyncio.sleep(0.005)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)


# ---- topologies -----------------------------------------------------------------------------


@dataclass
class Topology:
    name: str
    url: str
    servers: list[RedisServer]  # every redis-server process of it (CPU accounting)
    flush: Any  # () -> None

    def redis_cpu(self) -> float:
        return sum(cpu_seconds(s.pid) for s in self.servers)


def single_topology(server: RedisServer) -> Topology:
    def flush() -> None:
        with redis_py.Redis.from_url(server.url) as r:
            r.flushall()

    return Topology("single", server.url, [server], flush)


def cluster_topology(cluster: LocalCluster) -> Topology:
    return Topology("cluster", cluster.url, list(cluster.servers), cluster.flushall)


def sentinel_topology(sentinel: LocalSentinel) -> Topology:
    return Topology("sentinel", sentinel.url, list(sentinel.data_nodes), sentinel.flushall)


def requests_for(types: Sequence[str]) -> list[TrainingRequest]:
    return [TrainingRequest(model_type="noop", framework_override=t) for t in types]


def round_robin(reqs: Sequence[TrainingRequest], n_per_type: int) -> Iterator[TrainingRequest]:
    for _ in range(n_per_type):
        yield from reqs


async def submit_all(producer: Producer, reqs: Sequence[TrainingRequest], n_per_type: int,
                     concurrency: int) -> tuple[dict[str, list[str]], float]:
    """Submit ``n_per_type`` jobs of every type, interleaved, ``concurrency`` at a time.
    Returns the job ids by type and the submit rate (submits/s)."""
    ids: dict[str, list[str]] = {r.framework_override or "": [] for r in reqs}
    todo = list(round_robin(reqs, n_per_type))
    t0 = time.perf_counter()
    for start in range(0, len(todo), concurrency):
        subs = await asyncio.gather(
            *(producer.submit_training(r) for r in todo[start:start + concurrency]))
        for s in subs:
            ids[s.worker_type].append(s.job_id)
    return ids, len(todo) / (time.perf_counter() - t0)


# ---- throughput: the same jobs on single and cluster --------------------------------------


@dataclass
class Drain:
    topology: str
    jobs: int
    submit_rate: float
    span_s: float  # workers resumed -> last finished_at (Redis clock, ms)
    wall_s: float  # workers resumed -> every job succeeded seen by the harness (10 ms polls)
    first_start_s: float  # workers resumed -> first started_at
    type_spans_s: dict[str, float]  # each type: workers resumed -> its last finished_at
    register_s: float  # worker processes started -> the last one registered
    worker_cpu_s: float  # all workers, during the drain
    redis_cpu_s: float  # every redis-server of the topology, replicas included, during the drain
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.span_s


async def _verify(redis: Redis, ids: dict[str, list[str]]
                  ) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Every job succeeded and every queue is empty; per type, its first ``started_at`` and
    last ``finished_at`` (ms, Redis clock)."""
    checks: dict[str, Any] = {"ok": True}
    spans: dict[str, tuple[int, int]] = {}
    for worker_type, job_ids in ids.items():
        keys = QueueKeys(worker_type, DEFAULT_PREFIX)
        statuses: dict[str, int] = {}
        lo, hi = 2**62, 0
        for start in range(0, len(job_ids), 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids[start:start + 1000]:
                    pipe.hmget(keys.job(job_id), "status", "started_at", "finished_at")
                rows = await pipe.execute()
            for status, started_at, finished_at in rows:
                statuses[status or "missing"] = statuses.get(status or "missing", 0) + 1
                if started_at:
                    lo = min(lo, int(started_at))
                if finished_at:
                    hi = max(hi, int(finished_at))
        stream = keys.stream(JobKind.TRAINING)
        xlen = await redis.xlen(stream)
        pending = (await redis.xpending(stream, GROUP))["pending"]
        succeeded = int(await redis.hget(keys.stats, "succeeded") or 0)
        ok = (xlen == 0 and pending == 0 and succeeded == len(job_ids)
              and statuses == {"succeeded": len(job_ids)})
        checks[worker_type] = {"xlen": xlen, "pending": pending, "succeeded": succeeded,
                               "records": statuses}
        checks["ok"] = checks["ok"] and ok
        spans[worker_type] = (lo, hi)
    return checks, spans


async def redis_time_ms(redis: Redis) -> int:
    if is_cluster(redis):  # every node runs on this host: one clock
        node = cast(RedisCluster, redis).get_random_node()
        seconds, micros = await redis.time(target_nodes=node)
    else:
        seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def _all_succeeded(redis: Redis, workers: Sequence[TypedWorker], total: int,
                         timeout: float) -> None:
    """Poll (10 ms) until the workers' types count ``total`` successes in all."""
    deadline = time.monotonic() + timeout
    while True:
        done = 0
        for w in workers:
            w.check_alive()
            done += int(await redis.hget(w.keys.stats, "succeeded") or 0)
        if done >= total:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done}/{total} succeeded after {timeout:.0f} s; worker log:\n"
                               f"{workers[0].warnings()}")
        await asyncio.sleep(POLL_S)


async def drain_round(top: Topology, types: Sequence[str], n_per_type: int, concurrency: int,
                      submit_concurrency: int, tmp: Path) -> Drain:
    """One worker process per type starts, registers, and is paused (SIGSTOP); ``n_per_type``
    no-op jobs of every type are submitted; every worker is resumed at once (SIGCONT) and the
    drain is timed from there to the last job's ``finished_at``. Process start-up is left out,
    and no worker drains alone while another is still importing."""
    top.flush()
    redis = client(top.url)
    workers = [TypedWorker(top.url, t, concurrency, tmp) for t in types]
    try:
        t_start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            await w.wait_registered_as(redis)
        register_s = time.perf_counter() - t_start
        for w in workers:
            w.pause()
        paused = time.perf_counter()
        ids, submit_rate = await submit_all(Producer(redis), requests_for(types), n_per_type,
                                            submit_concurrency)
        total = n_per_type * len(types)
        if (pause := time.perf_counter() - paused) > PAUSE_WARN_S:
            console.print(f"[yellow]note: the workers were paused {pause:.0f} s, past their "
                          f"heartbeat TTL ({PAUSE_WARN_S:.0f} s); use fewer --jobs[/yellow]")
        cpu0, rcpu0 = sum(cpu_seconds(w.pid) for w in workers), top.redis_cpu()
        resumed_ms = await redis_time_ms(redis)
        t0 = time.perf_counter()
        for w in workers:
            w.resume()
        await _all_succeeded(redis, workers, total, timeout=max(120.0, total / 50))
        wall = time.perf_counter() - t0
        worker_cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu0
        redis_cpu = top.redis_cpu() - rcpu0
        for w in workers:
            w.stop()
        checks, spans = await _verify(redis, ids)
        first = min(lo for lo, _ in spans.values())
        last = max(hi for _, hi in spans.values())
        return Drain(top.name, total, submit_rate, (last - resumed_ms) / 1000, wall,
                     (first - resumed_ms) / 1000,
                     {t: (hi - resumed_ms) / 1000 for t, (_, hi) in spans.items()},
                     register_s, worker_cpu, redis_cpu, checks)
    finally:
        for w in workers:
            w.resume()
            w.stop()
        await redis.aclose()


# ---- durable submit -------------------------------------------------------------------------


MODES = ("w=0", "w=1", "w=1 without WAIT")


class OneConnectionNoWait(Producer):
    """Diagnostic: durable submit's client path (SUBMIT sent on one connection of the key's
    master, ``on_one_connection``) without the WAIT. Set against ``w=1`` it isolates the cost
    of WAIT itself; set against ``w=0`` the difference of the two client paths (on a cluster,
    redis-py's cluster command path against a bare connection)."""

    async def _submit_and_wait(self, keys: list[str], args: list[scripts.Arg]
                               ) -> tuple[list[Any], int]:
        submit = ("EVALSHA", scripts.SUBMIT.sha, len(keys), *keys, *args)
        (reply,) = await on_one_connection(self.redis, keys[0], [submit])
        if isinstance(reply, NoScriptError):
            await self.redis.script_load(scripts.SUBMIT.text)
            (reply,) = await on_one_connection(self.redis, keys[0], [submit])
        if isinstance(reply, Exception):
            raise reply
        return list(reply), self.wait_replicas


def producer_for(redis: Redis, mode: str) -> Producer:
    if mode == "w=0":
        return Producer(redis)
    if mode == "w=1":
        return Producer(redis, wait_replicas=1, wait_timeout_ms=1000)
    return OneConnectionNoWait(redis, wait_replicas=1, wait_timeout_ms=1000)


@dataclass
class SubmitCost:
    topology: str
    mode: str
    rates: list[float] = field(default_factory=list)  # submits/s, concurrent, per round
    latencies_ms: list[float] = field(default_factory=list)  # one at a time, every round

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)


async def submit_round(top: Topology, types: Sequence[str], mode: str, n: int,
                       concurrency: int, iterations: int, warmup: int
                       ) -> tuple[float, list[float]]:
    """Submit ``n`` jobs (over ``types``, ``concurrency`` at a time) with no worker running, then
    ``iterations`` more one at a time, timing each call. (submits/s, per-submit ms)."""
    top.flush()
    redis = client(top.url)
    try:
        producer = producer_for(redis, mode)
        reqs = requests_for(types)
        for r in reqs:  # groups created and scripts loaded before timing
            await producer.submit_training(r)
        _, rate = await submit_all(producer, reqs, max(1, n // len(reqs)), concurrency)
        samples: list[float] = []
        for i in range(warmup + iterations):
            req = reqs[i % len(reqs)]
            t0 = time.perf_counter()
            await producer.submit_training(req)
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1000)
        return rate, samples
    finally:
        await redis.aclose()


# ---- output ---------------------------------------------------------------------------------


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _ratio(num: float, den: float) -> str:
    """num / den, or "n/a" when the reference measured nothing (CPU times tick in 10 ms steps,
    so a short run can read 0 s for a whole process)."""
    return f"{num / den:.2f}" if den > 0 else "n/a"


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


def median_round(drains: list[Drain]) -> Drain:
    return sorted(drains, key=lambda d: d.rate)[(len(drains) - 1) // 2]


def render_throughput(single: list[Drain], cluster: list[Drain], types: Sequence[str],
                      placement: dict[str, int], concurrency: int) -> None:
    s_rate = statistics.median(d.rate for d in single)
    c_rate = statistics.median(d.rate for d in cluster)
    s_sub = statistics.median(d.submit_rate for d in single)
    c_sub = statistics.median(d.submit_rate for d in cluster)
    sm, cm = median_round(single), median_round(cluster)
    table = Table(title=f"same jobs, one Redis vs Redis Cluster 3 masters x 1 replica "
                        f"({len(types)} worker types, {sm.jobs // len(types):,} no-op jobs each)",
                  title_justify="left")
    table.add_column("")
    table.add_column("single", justify="right")
    table.add_column("cluster", justify="right")
    table.add_column("cluster / single", justify="right")
    table.add_row("drain throughput (jobs/s)", _n(s_rate), _n(c_rate), _ratio(c_rate, s_rate))
    table.add_row("submit rate (submits/s)", _n(s_sub), _n(c_sub), _ratio(c_sub, s_sub))
    s_w, c_w = sm.worker_cpu_s * 1e6 / sm.jobs, cm.worker_cpu_s * 1e6 / cm.jobs
    table.add_row("worker CPU per job (us)", _n(s_w), _n(c_w), _ratio(c_w, s_w))
    s_r, c_r = sm.redis_cpu_s * 1e6 / sm.jobs, cm.redis_cpu_s * 1e6 / cm.jobs
    table.add_row("redis CPU per job (us, all nodes)", _n(s_r), _n(c_r), _ratio(c_r, s_r))
    console.print(table)
    details = Table(show_header=False, box=None, padding=(0, 1))
    details.add_column(style="dim")
    details.add_column()
    details.add_row("types", ", ".join(f"{t} -> master :{placement[t]}" for t in types)
                    + f"; one worker process each, MAX_CONCURRENT_JOBS={concurrency}")
    for label, drains in (("single", single), ("cluster", cluster)):
        details.add_row(f"{label} rounds", (
            "drain " + ", ".join(_n(d.rate) for d in drains) + " jobs/s; submit "
            + ", ".join(_n(d.submit_rate) for d in drains) + " /s (medians used)"))
    for d in (sm, cm):
        details.add_row(f"median {d.topology} round", (
            f"{d.jobs:,} jobs in {d.span_s:.2f} s from SIGCONT to the last finished_at "
            f"(harness wall clock {d.wall_s:.2f} s); first job started after "
            f"{d.first_start_s * 1000:.0f} ms; each type done at "
            + ", ".join(f"{v:.2f}" for v in d.type_spans_s.values())
            + f" s; worker processes registered {d.register_s:.2f} s after their start; "
            f"cpu: workers {d.worker_cpu_s / d.span_s:.2f} cores, redis "
            f"{d.redis_cpu_s / d.span_s:.2f} cores"))
    ok = all(d.checks["ok"] for d in (*single, *cluster))
    details.add_row("drain checks", "ok (every job succeeded once per record and stats, "
                    "streams empty, nothing pending)" if ok else "FAILED: " + json.dumps(
                        [d.checks for d in (*single, *cluster) if not d.checks["ok"]]))
    console.print(details)


def render_durable(costs: dict[tuple[str, str], SubmitCost], topologies: Sequence[str],
                   concurrency: int) -> None:
    table = Table(title=f"durable submit: wait_replicas=1 (SUBMIT, then WAIT 1 1000 on the same "
                        f"connection) against 0; rate with {concurrency} submits in flight, "
                        f"latency one at a time", title_justify="left")
    for name, justify in (("topology", "left"), ("submit", "left"), ("submits/s", "right"),
                          ("/ w=0", "right"), ("p50 ms", "right"), ("/ w=0", "right"),
                          ("p90 ms", "right"), ("p99 ms", "right"), ("/ w=0", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name in topologies:
        base = costs[name, "w=0"]
        for mode in MODES:
            c = costs[name, mode]
            table.add_row(name, mode if mode != MODES[2] else f"diag: {mode}", _n(c.rate),
                          _ratio(c.rate, base.rate), _ms(c.p(50)),
                          _ratio(c.p(50), base.p(50)), _ms(c.p(90)), _ms(c.p(99)),
                          _ratio(c.p(99), base.p(99)))
    console.print(table)
    details = Table(show_header=False, box=None, padding=(0, 1))
    details.add_column(style="dim")
    details.add_column()
    for (name, mode), c in costs.items():
        details.add_row(f"{name} {mode}", (
            "rounds " + ", ".join(_n(r) for r in c.rates) + " submits/s; "
            f"{len(c.latencies_ms):,} single submits, mean {_ms(statistics.fmean(c.latencies_ms))}"
            f" ms, p99.9 {_ms(c.p(99.9))} ms, max {_ms(max(c.latencies_ms))} ms"))
    console.print(details)


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4000,
                        help="no-op jobs per worker type per drain (default 4000)")
    parser.add_argument("--types", type=int, default=3,
                        help="worker types (one worker process each), spread over the "
                             "cluster's masters (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each single then cluster (and w=0 then w=1 for durable "
                             "submit); medians are compared (default 3)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="MAX_CONCURRENT_JOBS of each worker (default 64)")
    parser.add_argument("--submit-concurrency", type=int, default=64,
                        help="submits in flight at once (asyncio.gather) (default 64)")
    parser.add_argument("--durable-submits", type=int, default=2000,
                        help="concurrent submits per durable-submit round (default 2000)")
    parser.add_argument("--latency-iterations", type=int, default=500,
                        help="one-at-a-time submits timed per durable-submit round "
                             "(default 500)")
    parser.add_argument("--warmup", type=int, default=50,
                        help="one-at-a-time submits run first, not counted (default 50)")
    parser.add_argument("--part", choices=["all", "throughput", "durable"], default="all")
    parser.add_argument("--redis-server", default=None, metavar="PATH",
                        help="the redis-server binary (redis-cli beside it or on PATH)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write every number as JSON")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    data: dict[str, Any] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(workdir()))
        console.print("[dim]starting a Redis Cluster (3 masters x 1 replica) ...[/dim]")
        cluster = stack.enter_context(LocalCluster(masters=3, replicas=1,
                                                   executable=args.redis_server))
        ranges = cluster_slot_ranges(cluster.ports[0])
        types = spread_types(args.types, ranges)
        register(types)
        placement = {t: master_port_of(t, ranges) for t in types}
        server = cluster.servers[0]
        env = {
            "redis": f"redis-server {server.version} ({server.executable}), every server "
                     f"private on 127.0.0.1, appendonly=no, no RDB snapshots",
            "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), Python "
                       f"{platform.python_version()}, redis-py {redis_py.__version__}",
            "types": ", ".join(f"{t}:{placement[t]}" for t in types),
            "load_before": _load(),
        }
        data["env"] = env
        console.print(f"[dim]{env['redis']}; {env['machine']}[/dim]")
        ctop = cluster_topology(cluster)
        if args.part in ("all", "throughput"):
            single = single_topology(stack.enter_context(private_redis(args.redis_server)))
            drains: dict[str, list[Drain]] = {"single": [], "cluster": []}
            for i in range(1, args.rounds + 1):
                for top in (single, ctop):
                    console.print(f"[dim]round {i}/{args.rounds}, {top.name}: {args.jobs:,} "
                                  f"jobs x {len(types)} types ...[/dim]")
                    drains[top.name].append(await drain_round(
                        top, types, args.jobs, args.concurrency, args.submit_concurrency, tmp))
            console.print()
            render_throughput(drains["single"], drains["cluster"], types, placement,
                              args.concurrency)
            s = statistics.median(d.rate for d in drains["single"])
            c = statistics.median(d.rate for d in drains["cluster"])
            data["throughput"] = {k: [asdict(d) for d in v] for k, v in drains.items()}
            data["throughput"]["ratio_cluster_single"] = c / s
            console.print()
        if args.part in ("all", "durable"):
            console.print("[dim]starting a Sentinel master + replica (3 sentinels) ...[/dim]")
            stop = sentinel_topology(stack.enter_context(LocalSentinel(
                executable=args.redis_server)))
            costs: dict[tuple[str, str], SubmitCost] = {}
            for i in range(1, args.rounds + 1):
                for top in (stop, ctop):
                    for mode in MODES:
                        console.print(f"[dim]durable submit round {i}/{args.rounds}, "
                                      f"{top.name}, {mode} ...[/dim]")
                        cost = costs.setdefault((top.name, mode), SubmitCost(top.name, mode))
                        rate, samples = await submit_round(
                            top, types, mode, args.durable_submits, args.submit_concurrency,
                            args.latency_iterations, args.warmup)
                        cost.rates.append(rate)
                        cost.latencies_ms += samples
            console.print()
            render_durable(costs, ("sentinel", "cluster"), args.submit_concurrency)
            data["durable"] = [
                {"topology": c.topology, "mode": c.mode, "rates": c.rates,
                 "rate": c.rate, "n": len(c.latencies_ms), "p50_ms": c.p(50),
                 "p90_ms": c.p(90), "p99_ms": c.p(99), "max_ms": max(c.latencies_ms)}
                for c in costs.values()]
    data["env"]["load_after"] = _load()
    console.print(f"[dim]total {time.perf_counter() - started:.1f} s; machine "
                  f"{data['env']['load_before']} before, {data['env']['load_after']} after "
                  f"({os.cpu_count()} CPUs; other work on the machine skews every figure)[/dim]")
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
