"""Redis memory per job, against the least any queue could store, measured in the same run.

    uv run python -m bench.memory_bench [--jobs 100000] [--waves 4] [--events-ttl 120]

On one private redis-server, each phase from an empty database (``FLUSHALL``), bytes are the
growth of ``INFO memory`` ``used_memory`` divided by the number of jobs:

* reference, queued: a bare ``XADD`` of a real no-op job's entry fields to one stream plus an
  ``HSET`` of its record's fields (copied from a job aiq just stored), pipelined;
* aiq, queued: the same number of no-op jobs through ``Producer.submit_training``, no worker;
* aiq, finished, events kept: one worker process runs them all (``python -m consumers``);
* reference, finished: an ``HSET`` of a finished record's fields (acked entries leave the stream);
* aiq, finished, after EVENTS_TTL_S: once every job's events stream expired (the record stays);
* flat beyond retention: ``--waves`` waves of jobs with ``RESULT_TTL_S`` = ``--result-ttl``; the
  memory left after each wave's records expired (it must not grow with the waves).

Prints the numbers, never asserts (see bench/README.md). Runs on older code too (no
EVENTS_TTL_S there: its events live as long as its records, so that row says n/a).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from bench._redis import KEYS, WorkerProcess, client, private_redis, workdir
from schemas.requests import TrainingRequest
from schemas.status import JobKind
from streams.limits import StreamLimits
from streams.producer import Producer

console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)
NOOP = TrainingRequest(model_type="noop")
STREAM = KEYS.stream(JobKind.TRAINING)
HAS_EVENTS_TTL = "events_ttl_s" in {f.name for f in dataclasses.fields(StreamLimits)}
POLL_S = 0.5


async def used(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def key_count(redis: Redis) -> int:
    return int(await redis.dbsize())


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        await asyncio.sleep(POLL_S)


async def fresh(redis: Redis) -> int:
    await redis.flushall()
    return await used(redis)


async def submit(producer: Producer, n: int, concurrency: int = 64) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, concurrency):
        subs = await asyncio.gather(*(producer.submit_training(NOOP)
                                      for _ in range(min(concurrency, n - start))))
        ids += [s.job_id for s in subs]
    return ids


async def succeeded(redis: Redis) -> int:
    return int(await redis.hget(KEYS.stats, "succeeded") or 0)


async def reference(redis: Redis, entry: dict[str, str], record: dict[str, str], n: int,
                    with_entry: bool) -> float:
    """Bytes per job of the least a queue stores: the entry (when queued) and the record."""
    base = await fresh(redis)
    for start in range(0, n, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1000, n)):
                job_id = f"job_{i:08d}-0000-0000-0000-000000000000"  # as long as a uuid4 id
                if with_entry:
                    pipe.xadd("ref:queue", {**entry, "job_id": job_id})
                pipe.hset(f"ref:{{diagnostic}}:job:{job_id}", mapping={**record,
                                                                        "job_id": job_id})
            await pipe.execute()
    return (await used(redis) - base) / n


async def breakdown(redis: Redis, job_id: str) -> str:
    """What one job's own keys cost (MEMORY USAGE, all samples) and the record's encoding."""
    rec, ev = KEYS.job(job_id), KEYS.job_events(job_id)
    parts = [f"record {await redis.memory_usage(rec, samples=0)} B "
             f"({await redis.object('encoding', rec)})"]
    ev_bytes = await redis.memory_usage(ev, samples=0)
    parts.append(f"own events stream {ev_bytes} B" if ev_bytes else "no events stream")
    result_bytes = await result_key_bytes(redis, [job_id])
    if result_bytes:
        parts.append(f"result key {result_bytes:.0f} B")
    return ", ".join(parts)


async def result_key_bytes(redis: Redis, job_ids: list[str]) -> float:
    """Mean MEMORY USAGE of these jobs' result keys (0 where there are none: older code)."""
    if not hasattr(KEYS, "job_result"):
        return 0.0
    sizes = [await redis.memory_usage(KEYS.job_result(j), samples=0) or 0 for j in job_ids]
    return sum(sizes) / len(sizes)


@dataclasses.dataclass
class Row:
    name: str
    reference: float | None
    aiq: float | None
    note: str = ""


def worker(url: str, tmp: Path, result_ttl: int, events_ttl: int) -> WorkerProcess:
    os.environ.update({"RESULT_TTL_S": str(result_ttl), "JOB_RETENTION_S": str(result_ttl),
                       "EVENTS_TTL_S": str(events_ttl)})
    w = WorkerProcess(url, 32, tmp)
    w.start()
    return w


async def drain(redis: Redis, w: WorkerProcess, target: int, timeout: float) -> None:
    await w.wait_registered(redis)

    async def done() -> bool:
        w.check_alive()
        return await succeeded(redis) >= target
    await until(done, timeout, f"{target} jobs succeeded")


async def lifecycle(redis: Redis, url: str, tmp: Path, args: argparse.Namespace) -> list[Row]:
    n, limits = args.jobs, StreamLimits(max_queued=10**8)
    producer = Producer(redis, limits)
    base = await fresh(redis)
    ids = await submit(producer, n)
    queued = (await used(redis) - base) / n
    sample = ids[n // 2]
    queued_note = await breakdown(redis, sample)
    entry = (await redis.xrange(STREAM, count=1))[0][1]
    record = await redis.hgetall(KEYS.job(sample))
    events_ttl = args.events_ttl if HAS_EVENTS_TTL else args.long_ttl
    w = worker(url, tmp, args.long_ttl, events_ttl)
    try:
        await drain(redis, w, n, args.timeout)
    finally:
        w.stop()
    finished = (await used(redis) - base) / n
    finished_note = await breakdown(redis, sample)
    finished_record = await redis.hgetall(KEYS.job(sample))
    result_bytes = await result_key_bytes(redis, ids[:: max(1, n // 200)])
    if result_bytes:  # the same fields in one hash: the record's and the result
        finished_record["result"] = await redis.get(KEYS.job_result(sample))
    rows = [Row("queued job", None, queued, queued_note),
            Row("finished job, events kept", None, finished, finished_note)]
    if HAS_EVENTS_TTL:
        async def expired() -> bool:  # no job's events stream left (records and results stay)
            async for _ in redis.scan_iter(match=KEYS.job_events("*"), count=10_000):
                return False
            return True
        await until(expired, args.events_ttl + args.timeout, "events streams expired")
        after = (await used(redis) - base) / n
        rows.append(Row("finished job, after EVENTS_TTL_S", None, after,
                        await breakdown(redis, sample)))
        rows.append(Row("  the same, result aside", None, after - result_bytes,
                        f"less the result keys' mean {result_bytes:.0f} B; reference: the "
                        "record's fields alone"))
    else:
        rows.append(Row("finished job, after EVENTS_TTL_S", None, None,
                        "n/a: events live as long as the record"))
    rows[0].reference = await reference(redis, entry, record, n, with_entry=True)
    ref_finished = await reference(redis, entry, finished_record, n, with_entry=False)
    rows[1].reference = rows[2].reference = ref_finished
    if len(rows) > 3:
        finished_record.pop("result", None)
        rows[3].reference = await reference(redis, entry, finished_record, n, with_entry=False)
    return rows


async def waves(redis: Redis, url: str, tmp: Path, args: argparse.Namespace
                ) -> list[tuple[int, float, int]]:
    """(jobs so far, bytes left once the wave expired, keys left) per wave."""
    per_wave = args.jobs // args.waves
    producer = Producer(redis, StreamLimits(max_queued=10**8))
    base = await fresh(redis)
    w = worker(url, tmp, args.result_ttl, min(args.result_ttl, args.events_ttl))
    out: list[tuple[int, float, int]] = []
    try:
        for k in range(1, args.waves + 1):
            await submit(producer, per_wave)
            await drain(redis, w, per_wave * k, args.timeout)

            async def expired() -> bool:
                return await key_count(redis) <= 16
            await until(expired, args.result_ttl + args.timeout, "wave's records expired")
            out.append((per_wave * k, await used(redis) - base, await key_count(redis)))
    finally:
        w.stop()
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def report(rows: list[Row], flat: list[tuple[int, float, int]], args: argparse.Namespace,
           version: str) -> None:
    console.print(f"redis-server {version}; {args.jobs:,} no-op jobs per phase; "
                  f"EVENTS_TTL_S support: {'yes' if HAS_EVENTS_TTL else 'no'}")
    table = Table(title="Redis memory per job (bytes, used_memory growth / jobs)")
    for col in ("job", "reference", "aiq", "aiq / reference", "one job's keys"):
        table.add_column(col)
    for r in rows:
        ratio = (f"{r.aiq / r.reference:.2f}x" if r.aiq is not None and r.reference
                 else "n/a")
        table.add_row(r.name, fmt(r.reference), fmt(r.aiq), ratio, r.note)
    console.print(table)
    table = Table(title=f"Flat beyond retention: {args.waves} waves, RESULT_TTL_S="
                        f"{args.result_ttl}, memory left once each wave expired")
    for col in ("jobs so far", "bytes above empty", "keys left"):
        table.add_column(col)
    for jobs, left, keys in flat:
        table.add_row(f"{jobs:,}", f"{left:,.0f}", str(keys))
    console.print(table)


async def run(args: argparse.Namespace) -> None:
    with private_redis(args.redis_server) as server, workdir() as tmp:
        redis = client(server.url)
        try:
            version = (await redis.info("server"))["redis_version"]
            rows = await lifecycle(redis, server.url, Path(tmp), args)
            flat = await waves(redis, server.url, Path(tmp), args)
        finally:
            await redis.aclose()
    report(rows, flat, args, version)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per phase")
    parser.add_argument("--waves", type=int, default=4, help="waves of --jobs/waves jobs")
    parser.add_argument("--events-ttl", type=int, default=120, help="EVENTS_TTL_S of the "
                        "lifecycle phase: long enough for the whole drain")
    parser.add_argument("--result-ttl", type=int, default=5, help="RESULT_TTL_S of the waves")
    parser.add_argument("--long-ttl", type=int, default=3600, help="RESULT_TTL_S of the "
                        "lifecycle phase (nothing expires but the events)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per wait, s")
    parser.add_argument("--redis-server", default=None, metavar="PATH")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
