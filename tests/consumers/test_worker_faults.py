"""A real worker (in this event loop) under faults: several long jobs renewed at once, a result
JSON cannot hold, Redis full (OOM under noeviction) and Redis read-only (a demoted master)
while jobs run. The worker backs off, recovers by itself, and every job finishes once."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from aiq.redis_server import free_port
from consumers.runtime import Worker
from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.support import eventually, running_worker, settings_for

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)


def job(model_type: str = "noop", **hp: object) -> TrainingRequest:
    return TrainingRequest(model_type=model_type, hyperparameters=hp)  # type: ignore[arg-type]


async def started_count(redis: Redis, job_id: str) -> int:
    return sum(f["type"] == "started" for _, f in await redis.xrange(KEYS.job_events(job_id)))


async def test_every_running_job_keeps_its_lease(redis: Redis, redis_url: str,
                                                 tmp_path: Path) -> None:
    """Three jobs, each running 5x the lease, on one worker; a second worker reclaims eagerly.
    Renewal must cover all three (it once renewed only the first of a batch)."""
    producer = Producer(redis)
    fast = settings_for(redis_url, tmp_path, lease_timeout_s=0.6, reclaim_interval_s=0.05,
                        max_concurrent_jobs=3)
    async with running_worker(fast, name="a"):
        subs = [await producer.submit_training(job("sleep", seconds=3, steps=6))
                for _ in range(3)]

        async def all_running_on_a() -> bool:
            recs = [await producer.get(s.job_id) for s in subs]
            return all(r.status is JobStatus.RUNNING and r.worker == "a" for r in recs)

        await eventually(all_running_on_a, timeout=20, what="worker a runs all three jobs")
        async with running_worker(fast, name="b"):
            recs = [await producer.wait(s.job_id, timeout=60) for s in subs]
    for rec in recs:
        assert rec.status is JobStatus.SUCCEEDED, rec
        assert rec.deliveries == 1 and rec.worker == "a"
        assert await started_count(redis, rec.job_id) == 1
    assert await redis.hget(KEYS.stats, "succeeded") == "3"


async def test_result_json_cannot_hold_fails_only_that_job(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, max_concurrent_jobs=2)):
        bad = await producer.submit_training(job("fail", error="unserializable"))
        rec = await producer.wait(bad.job_id, timeout=30)
        assert rec.status is JobStatus.FAILED and rec.attempt == 1
        assert rec.error is not None and rec.error.code == "result_not_serializable"
        later = [await producer.submit_training(job()) for _ in range(3)]
        for sub in later:
            assert (await producer.wait(sub.job_id, timeout=30)).status is JobStatus.SUCCEEDED


async def errorstat(redis: Redis, code: str) -> int:
    """How many commands Redis refused with ``code`` (INFO errorstats)."""
    stats = await redis.info("errorstats")
    return int(stats.get(f"errorstat_{code}", {}).get("count", 0))


@contextlib.asynccontextmanager
async def episode(redis: Redis, code: str, begin: list[str], end: list[str],
                  at_least_s: float) -> AsyncIterator[None]:
    """Redis refuses writes with ``code`` from ``begin`` to ``end`` (CONFIG/REPLICAOF, sent
    by the test's own client, which they never refuse); lasts ``at_least_s`` and until the
    worker has met the refusal a few times."""
    before = await errorstat(redis, code)
    await redis.execute_command(*begin)
    t0 = time.monotonic()
    try:
        yield

        async def refused_enough() -> bool:
            return (await errorstat(redis, code) >= before + 3
                    and time.monotonic() - t0 >= at_least_s)

        await eventually(refused_enough, timeout=30, what=f"the worker refused with {code}")
    finally:
        await redis.execute_command(*end)


async def heartbeat_at(redis: Redis, worker: Worker) -> int:
    raw = await redis.hget(KEYS.worker(worker.name), "heartbeat_at")
    return 0 if raw is None else int(raw)


async def ride_out(redis: Redis, redis_url: str, tmp_path: Path, code: str, begin: list[str],
                   end: list[str]) -> None:
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, max_concurrent_jobs=2, lease_timeout_s=3.0,
                            heartbeat_interval_s=0.2)
    async with running_worker(settings) as worker:
        long = await producer.submit_training(job("sleep", seconds=1.5, steps=15))

        async def running() -> bool:
            return (await producer.get(long.job_id)).status is JobStatus.RUNNING

        await eventually(running, timeout=20, what="the job running")
        # Progress, the final write and heartbeats all meet the refusal.
        async with episode(redis, code, begin, end, at_least_s=2.5):
            pass
        lifted = int(time.time() * 1000)
        rec = await producer.wait(long.job_id, timeout=60)
        assert rec.status is JobStatus.SUCCEEDED and rec.deliveries == 1, rec
        after = await producer.submit_training(job())
        assert (await producer.wait(after.job_id, timeout=30)).status is JobStatus.SUCCEEDED

        async def beating_again() -> bool:
            return await heartbeat_at(redis, worker) > lifted

        await eventually(beating_again, timeout=20, what="heartbeats after the episode")
    assert await started_count(redis, long.job_id) == 1


async def test_worker_rides_out_redis_out_of_memory(redis: Redis, redis_url: str,
                                                    tmp_path: Path) -> None:
    assert (await redis.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
    await ride_out(redis, redis_url, tmp_path, "OOM",
                   ["CONFIG", "SET", "maxmemory", "1"], ["CONFIG", "SET", "maxmemory", "0"])


async def test_worker_rides_out_redis_turning_read_only(redis: Redis, redis_url: str,
                                                        tmp_path: Path) -> None:
    # A replica of a master that does not answer keeps its data and refuses writes, as a
    # demoted master does during a failover.
    await ride_out(redis, redis_url, tmp_path, "READONLY",
                   ["REPLICAOF", "127.0.0.1", str(free_port())], ["REPLICAOF", "NO", "ONE"])


async def test_loops_keep_running_after_an_unexpected_error(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """A bug in one step (here: the heartbeat's payload) is logged and retried; it takes
    neither that loop nor the worker down."""
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, heartbeat_interval_s=0.1)
    async with running_worker(settings) as worker:
        await eventually(lambda: heartbeat_at(redis, worker), what="worker registered")
        real = worker._heartbeat_once
        calls = 0

        async def flaky() -> None:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise RuntimeError("boom")
            await real()

        worker._heartbeat_once = flaky  # type: ignore[method-assign]
        t0 = int(time.time() * 1000)

        async def beating_again() -> bool:
            return calls > 2 and await heartbeat_at(redis, worker) > t0

        await eventually(beating_again, timeout=20, what="heartbeats after two failures")
        sub = await producer.submit_training(job())
        assert (await producer.wait(sub.job_id, timeout=30)).status is JobStatus.SUCCEEDED


async def test_a_final_write_that_breaks_lets_the_job_run_again(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """An unexpected error in the final write (not Redis: a bug) must not leave the job held
    and renewed forever: the worker lets its lease run out, and it runs again and succeeds."""
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, lease_timeout_s=1.5, reclaim_interval_s=0.1)
    async with running_worker(settings) as worker:
        real = worker.queue.write_endings
        calls = 0

        async def broken_once(calls_: list[Any]) -> list[BaseException | None]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("boom")
            return await real(calls_)

        worker.queue.write_endings = broken_once  # type: ignore[method-assign]
        sub = await producer.submit_training(job())
        rec = await producer.wait(sub.job_id, timeout=30)
        assert calls >= 2
        await eventually(lambda: _true(not worker.runs), what="the slot freed")
    # Ran again after its lease ran out (more than once only if a busy machine stalled the
    # worker past a lease), and succeeded exactly once.
    assert rec.status is JobStatus.SUCCEEDED and rec.deliveries >= 2
    assert await started_count(redis, sub.job_id) >= 2
    assert await redis.hget(KEYS.stats, "succeeded") == "1"


async def _true(value: bool) -> bool:
    return value
