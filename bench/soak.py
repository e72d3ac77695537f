"""Crash soak: jobs keep flowing while workers are SIGKILLed every 1-3 s and Redis (AOF
``everysec``) is SIGKILLed and restarted; afterwards every accepted job has succeeded exactly
once, and no job was started again while the worker running it was alive.

    uv run python -m bench.soak                          # 20 rounds, about 10 minutes
    uv run python -m bench.soak --rounds 2 --kills 3     # quick look

Every round: short ``sleep`` jobs are submitted over HTTP (``POST /jobs/training`` to one
gateway process) at ``--rate`` per second (``--high-share`` of them with priority high, so both
lanes go through the storm) and ``--long`` jobs longer than the lease at its
start; ``--victims`` workers are SIGKILLed one at a time, ``--kills`` times, 1-3 s apart, each
replaced at once by a new process; half-way through the storm Redis itself is SIGKILLed, kept
down ``--redis-down`` seconds, and restarted on its AOF. ``--steady`` more workers are never
killed: a job they start must run once. After the last kill the round waits until every job
the server holds has succeeded and reports how long that took.

Prints per-round figures and a verdict; exits 1 when a check fails (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import re
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.exceptions
from rich.console import Console
from rich.table import Table

from aiq.redis_server import RedisServer
from bench._redis import KEYS, WorkerProcess, client, workdir
from bench.sse_fanout import GatewayProcess
from schemas.status import JobKind
from streams.errors import UNAVAILABLE
from streams.keys import GROUP

console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)
LANES = KEYS.lanes(JobKind.TRAINING)  # the normal and the high-priority lane
PID_IN_NAME = re.compile(r"-(\d+)-[^-]+$")  # consumer names are host-pid-random


class SoakWorker(WorkerProcess):
    """A diagnostic worker with the soak's lease and delivery limit."""

    def __init__(self, url: str, args: argparse.Namespace, tmp: Path) -> None:
        super().__init__(url, args.slots, tmp)
        self.args = args

    def env(self) -> dict[str, str]:
        return {**super().env(), "LEASE_TIMEOUT_S": str(self.args.lease),
                # The soak asks whether a job is lost, not how many crashes one job survives:
                # a long job can land on one dying worker after another.
                "MAX_DELIVERIES": "1000", "SHUTDOWN_GRACE_S": "30"}


@dataclass
class Kill:
    what: str  # "worker" or "redis"
    at: float  # time.time() of the SIGKILL
    pid: int | None = None
    stranded: int = 0  # entries pending for the killed worker right after its death
    down_s: float = 0.0  # redis: from the SIGKILL until it answered PING again


@dataclass
class Round:
    number: int
    accepted: list[str] = field(default_factory=list)
    long_ids: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # status code or error -> count
    kills: list[Kill] = field(default_factory=list)
    last_kill: float = 0.0
    last_success: float = 0.0
    drained: bool = False

    @property
    def recovery_s(self) -> float:
        return self.last_success - self.last_kill


@dataclass
class Verdict:
    jobs_in_redis: int = 0
    accepted: int = 0
    accepted_missing: list[str] = field(default_factory=list)
    not_succeeded: dict[str, str] = field(default_factory=dict)  # job id -> status
    success_events: Counter[int] = field(default_factory=Counter)  # successes per job -> jobs
    stats: dict[str, str] = field(default_factory=dict)
    dead_letters: int = 0
    pending: int = 0
    stream_len: int = 0
    restarts_after_kill: int = 0  # starts of a job whose previous worker had been killed
    restarts_while_alive: list[str] = field(default_factory=list)  # the checked property
    long_restarts: int = 0
    max_deliveries: int = 0

    def failures(self) -> list[str]:
        out = []
        if self.accepted_missing:
            out.append(f"{len(self.accepted_missing)} accepted jobs are not in Redis")
        if self.not_succeeded:
            out.append(f"{len(self.not_succeeded)} jobs did not succeed: "
                       f"{dict(Counter(self.not_succeeded.values()))}")
        if set(self.success_events) != {1}:
            out.append(f"successes per job: {dict(self.success_events)} (want only 1)")
        if int(self.stats.get("succeeded", 0)) != self.jobs_in_redis:
            out.append(f"stats.succeeded={self.stats.get('succeeded')} "
                       f"!= {self.jobs_in_redis} jobs")
        if int(self.stats.get("failed", 0)) or self.dead_letters:
            out.append(f"failed={self.stats.get('failed', 0)} dead={self.dead_letters}")
        if self.pending or self.stream_len:
            out.append(f"left in the stream: pending={self.pending} len={self.stream_len}")
        if self.restarts_while_alive:
            out.append(f"{len(self.restarts_while_alive)} jobs started again while their "
                       f"worker lived: {self.restarts_while_alive[:5]}")
        return out


# ---- the storm ------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, server: RedisServer, tmp: Path) -> None:
        self.args, self.server, self.tmp = args, server, tmp
        self.redis = client(server.url)
        self.gateway = GatewayProcess(server.url, tmp)
        self.steady = [SoakWorker(server.url, args, tmp) for _ in range(args.steady)]
        self.victims = [SoakWorker(server.url, args, tmp) for _ in range(args.victims)]
        self.killed_at: dict[int, float] = {}  # worker pid -> time of its SIGKILL
        self.rounds: list[Round] = []
        self.rng = random.Random(args.seed)

    async def run(self) -> None:
        self.gateway.start()
        await self.gateway.wait_ready(self.redis)
        for w in self.steady + self.victims:
            w.start()
        await self._until(lambda: self._registered(len(self.steady) + len(self.victims)), 60,
                          "every worker registered")
        async with httpx.AsyncClient(base_url=self.gateway.base_url, timeout=10) as http:
            for n in range(1, self.args.rounds + 1):
                r = Round(n)
                self.rounds.append(r)
                await self._round(r, http)
                console.print(self._round_line(r))
                if not r.drained:
                    break

    async def _round(self, r: Round, http: httpx.AsyncClient) -> None:
        a = self.args
        long_body = {"model_type": "sleep",
                     "hyperparameters": {"seconds": a.long_seconds, "steps": 20}}
        for _ in range(a.long):
            await self._submit(r, http, long_body, r.long_ids)
        stop = asyncio.Event()
        submitter = asyncio.create_task(self._submit_short(r, http, stop))
        for k in range(a.kills):
            await asyncio.sleep(self.rng.uniform(a.kill_min, a.kill_max))
            r.kills.append(await self._kill_worker())
            if k == a.kills // 2 - 1 or a.kills == 1:
                await asyncio.sleep(self.rng.uniform(a.kill_min, a.kill_max))
                r.kills.append(await self._kill_redis())
        stop.set()
        await submitter
        r.last_kill = max(k.at for k in r.kills)
        r.drained = await self._drain(r)

    async def _submit_short(self, r: Round, http: httpx.AsyncClient, stop: asyncio.Event
                            ) -> None:
        body = {"model_type": "sleep",
                "hyperparameters": {"seconds": self.args.short_seconds, "steps": 1}}
        high = {**body, "priority": "high"}  # both lanes go through the crashes
        interval, due = 1 / self.args.rate, time.monotonic()
        while not stop.is_set():
            lane = high if self.rng.random() < self.args.high_share else body
            await self._submit(r, http, lane, r.accepted)
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _submit(self, r: Round, http: httpx.AsyncClient, body: dict[str, Any],
                      into: list[str]) -> None:
        try:
            resp = await http.post("/jobs/training", json=body)
        except httpx.HTTPError as exc:
            r.refused[type(exc).__name__] += 1
            return
        if resp.status_code == 202:
            into.append(resp.json()["job_id"])
        else:
            r.refused[str(resp.status_code)] += 1

    async def _kill_worker(self) -> Kill:
        i = self.rng.randrange(len(self.victims))
        victim = self.victims[i]
        pid = victim.pid
        assert victim.process is not None and pid is not None
        victim.process.send_signal(signal.SIGKILL)
        at = time.time()
        victim.process.wait(10)
        victim.stop()  # closes its log
        self.killed_at[pid] = at
        stranded = await self._retry(lambda: self._pending_of(pid))
        self.victims[i] = SoakWorker(self.server.url, self.args, self.tmp)
        self.victims[i].start()
        return Kill("worker", at, pid, stranded)

    async def _kill_redis(self) -> Kill:
        at = time.time()
        self.server.kill()
        await asyncio.sleep(self.args.redis_down)
        await asyncio.to_thread(self.server.start)
        return Kill("redis", at, down_s=time.time() - at)

    async def _drain(self, r: Round) -> bool:
        """Until every job the server holds has succeeded; the last one's finish time."""
        async def done() -> bool:
            total = int(await self.redis.zcard(KEYS.jobs))
            return int(await self.redis.hget(KEYS.stats, "succeeded") or 0) >= total

        if not await self._until(done, self.args.drain_timeout, "every job succeeded",
                                 fail=False):
            return False
        ids = r.accepted + r.long_ids
        finished = await self._hmget(ids, "finished_at")
        r.last_success = max((int(f[0]) for f in finished if f[0]), default=0) / 1000
        return True

    # ---- checks ---------------------------------------------------------------------------

    async def verdict(self) -> Verdict:
        v = Verdict()
        all_ids = await self.redis.zrange(KEYS.jobs, 0, -1)
        v.jobs_in_redis = len(all_ids)
        accepted = [j for r in self.rounds for j in r.accepted + r.long_ids]
        v.accepted = len(accepted)
        v.accepted_missing = sorted(set(accepted) - set(all_ids))
        long_ids = {j for r in self.rounds for j in r.long_ids}
        records = await self._hmget(all_ids, "status", "deliveries")
        for job_id, (status, deliveries) in zip(all_ids, records, strict=True):
            if status != "succeeded":
                v.not_succeeded[job_id] = str(status)
            v.max_deliveries = max(v.max_deliveries, int(deliveries or 0))
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in all_ids:
                pipe.xrange(KEYS.job_events(job_id))
            histories = await pipe.execute()
        for job_id, events in zip(all_ids, histories, strict=True):
            v.success_events[sum(1 for _, e in events if e["type"] == "succeeded")] += 1
            starts = [(int(e["ts"]) / 1000, json.loads(e["data"])["worker"])
                      for _, e in events if e["type"] == "started"]
            for (t1, w1), (t2, _) in itertools.pairwise(starts):
                if job_id in long_ids:
                    v.long_restarts += 1
                if self._killed_between(w1, t1, t2):
                    v.restarts_after_kill += 1
                else:
                    v.restarts_while_alive.append(f"{job_id} ({w1} at {t1:.3f}, again {t2:.3f})")
        v.stats = await self.redis.hgetall(KEYS.stats)
        v.dead_letters = sum([await self.redis.xlen(KEYS.dead(kind)) for kind in JobKind])
        v.pending = sum([int((await self.redis.xpending(s, GROUP))["pending"]) for s in LANES])
        v.stream_len = sum([int(await self.redis.xlen(s)) for s in LANES])
        return v

    def _killed_between(self, worker: str, t1: float, t2: float) -> bool:
        m = PID_IN_NAME.search(worker)
        killed = self.killed_at.get(int(m.group(1))) if m else None
        return killed is not None and t1 - 0.01 <= killed <= t2 + 0.01  # ms-truncated ts

    # ---- helpers --------------------------------------------------------------------------

    async def _pending_of(self, pid: int) -> int:
        held = 0
        for stream in LANES:
            summary = await self.redis.xpending(stream, GROUP)
            held += sum(int(c["pending"]) for c in summary["consumers"] or []
                        if f"-{pid}-" in c["name"])
        return held

    async def _registered(self, n: int) -> bool:
        return int(await self.redis.scard(KEYS.workers)) >= n

    async def _hmget(self, ids: list[str], *fields: str) -> list[list[str | None]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(KEYS.job(job_id), *fields)
            rows: list[list[str | None]] = await pipe.execute()
        return rows

    async def _retry(self, call: Any) -> Any:
        """Redis restarts under us: a harness read waits for it like the workers do."""
        for _ in range(200):
            try:
                return await call()
            except UNAVAILABLE:
                await asyncio.sleep(0.05)
        return await call()

    async def _until(self, check: Any, timeout: float, what: str, fail: bool = True) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(*UNAVAILABLE):
                if await check():
                    return True
            for w in self.steady:
                w.check_alive()
            await asyncio.sleep(0.05)
        if fail:
            raise TimeoutError(f"{what}: not after {timeout} s")
        return False

    def _round_line(self, r: Round) -> str:
        stranded = [k.stranded for k in r.kills if k.what == "worker"]
        redis_down = [f"{k.down_s:.1f}" for k in r.kills if k.what == "redis"]
        refused = ", ".join(f"{c}x{n}" for c, n in r.refused.items()) or "none"
        state = f"recovered in {r.recovery_s:.1f} s" if r.drained else "NOT DRAINED"
        return (f"round {r.number:2}: {len(r.accepted)} short + {len(r.long_ids)} long accepted"
                f" (refused: {refused}); {len(stranded)} worker kills stranding {stranded},"
                f" redis down {'/'.join(redis_down)} s; {state}")

    async def close(self) -> None:
        for w in self.steady + self.victims:
            w.stop()
        self.gateway.stop()
        await self.redis.aclose()


# ---- report ---------------------------------------------------------------------------------


def report(soak: Soak, v: Verdict, elapsed_s: float) -> dict[str, Any]:
    rounds = [r for r in soak.rounds if r.drained]
    recoveries = sorted(r.recovery_s for r in rounds)
    kills = [k for r in soak.rounds for k in r.kills]
    stranded = [k.stranded for k in kills if k.what == "worker"]
    refused: Counter[str] = sum((r.refused for r in soak.rounds), Counter())
    a = soak.args
    t = Table(title=f"crash soak: {len(soak.rounds)} rounds in {elapsed_s / 60:.1f} min; "
              f"{a.steady} steady + {a.victims} killed workers, MAX_CONCURRENT_JOBS={a.slots}, "
              f"LEASE_TIMEOUT_S={a.lease}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    n_long = sum(len(r.long_ids) for r in soak.rounds)
    rows = [
        ("jobs accepted (202): short + long", f"{v.accepted - n_long} + {n_long}"),
        ("jobs in Redis (incl. written but not answered)", str(v.jobs_in_redis)),
        ("submits refused (code x count)", ", ".join(f"{c}x{n}" for c, n in refused.items())
         or "none"),
        ("worker SIGKILLs / Redis SIGKILLs", f"{len(stranded)} / {len(kills) - len(stranded)}"),
        ("entries stranded per worker kill: mean / max",
         f"{statistics.fmean(stranded):.1f} / {max(stranded)}" if stranded else "-"),
        ("Redis down per kill: max (s)",
         f"{max((k.down_s for k in kills if k.what == 'redis'), default=0):.2f}"),
        ("last kill -> last success (s): p50 / max",
         f"{statistics.median(recoveries):.1f} / {recoveries[-1]:.1f}" if recoveries else "-"),
        ("jobs not succeeded", str(len(v.not_succeeded))),
        ("successes per job (count: jobs)", str(dict(v.success_events))),
        ("stats: succeeded / failed", f"{v.stats.get('succeeded', 0)} / "
         f"{v.stats.get('failed', 0)}"),
        ("dead letters / pending / stream length", f"{v.dead_letters} / {v.pending} / "
         f"{v.stream_len}"),
        ("restarts after the worker's SIGKILL (long jobs)",
         f"{v.restarts_after_kill} ({v.long_restarts})"),
        ("restarts while the worker lived", str(len(v.restarts_while_alive))),
        ("most deliveries of one job", str(v.max_deliveries)),
    ]
    for row in rows:
        t.add_row(*row)
    console.print(t)
    failures = v.failures() + [f"round {r.number} did not drain in {a.drain_timeout} s"
                               for r in soak.rounds if not r.drained]
    console.print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return {"args": vars(a), "elapsed_s": elapsed_s, "rows": dict(rows), "failures": failures,
            "rounds": [{"number": r.number, "accepted": len(r.accepted),
                        "long": len(r.long_ids), "refused": dict(r.refused),
                        "kills": [asdict(k) for k in r.kills], "drained": r.drained,
                        "recovery_s": r.recovery_s} for r in soak.rounds]}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with workdir() as tmp, RedisServer() as server:
        console.print(f"redis-server {server.version} (appendonly yes, appendfsync everysec) "
                      f"on {server.url}")
        soak = Soak(args, server, Path(tmp))
        t0 = time.monotonic()
        try:
            await soak.run()
            verdict = await soak.verdict()
        finally:
            await soak.close()
        return report(soak, verdict, time.monotonic() - t0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--kills", type=int, default=6, help="worker SIGKILLs per round")
    p.add_argument("--kill-min", type=float, default=1.0, help="seconds between kills, at least")
    p.add_argument("--kill-max", type=float, default=3.0, help="... at most")
    p.add_argument("--victims", type=int, default=2, help="workers that are killed and replaced")
    p.add_argument("--steady", type=int, default=1, help="workers that are never killed")
    p.add_argument("--slots", type=int, default=4, help="MAX_CONCURRENT_JOBS of every worker")
    p.add_argument("--lease", type=float, default=5.0, help="LEASE_TIMEOUT_S of every worker")
    p.add_argument("--rate", type=float, default=80.0, help="short jobs submitted per second")
    p.add_argument("--short-seconds", type=float, default=0.05)
    p.add_argument("--long", type=int, default=4, help="long jobs per round")
    p.add_argument("--high-share", type=float, default=0.25,
                   help="share of the short jobs submitted with priority high")
    p.add_argument("--long-seconds", type=float, default=8.0)
    p.add_argument("--redis-down", type=float, default=1.0, help="seconds Redis stays dead")
    p.add_argument("--drain-timeout", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if args.long_seconds <= args.lease:
        p.error("--long-seconds must exceed --lease (long jobs need their lease renewed)")
    return args


def main(argv: list[str] | None = None) -> int:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    args = parse_args(argv)
    try:
        out = asyncio.run(main_async(args))
    except redis.exceptions.RedisError as exc:
        console.print(f"soak aborted: {exc!r}")
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
