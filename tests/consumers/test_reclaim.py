"""Reclaim after crashes: a worker with free slots keeps taking back expired entries until none
is left (not one slot-sized batch per timer tick), and a SIGKILLed worker strands at most twice
its slots (the jobs running plus the final writes not yet landed)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from schemas.events import parse_event
from schemas.requests import TrainingRequest
from schemas.status import JobKind
from streams.consumer import QueueConsumer
from streams.keys import GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer
from tests.support import eventually, running_worker, settings_for, spawn_worker

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)


def job(model_type: str = "noop", **hp: object) -> TrainingRequest:
    return TrainingRequest(model_type=model_type, hyperparameters=hp)  # type: ignore[arg-type]


async def submit_many(producer: Producer, n: int, req: TrainingRequest) -> list[str]:
    return [(await producer.submit_training(req)).job_id for _ in range(n)]


async def succeeded(redis: Redis) -> int:
    return int(await redis.hget(KEYS.stats, "succeeded") or 0)


async def test_two_workers_take_back_hundreds_of_stranded_entries_at_once(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    n = 300
    job_ids = await submit_many(producer, n, job("sleep", seconds=0.02, steps=1))
    # Two workers read and started every job, then died (their entries look a minute idle).
    for name, count in (("dead-1", 160), ("dead-2", 140)):
        dead = QueueConsumer(redis, KEYS, name, StreamLimits())
        await dead.ensure_groups()
        batch = await dead.read(redis, count, 100)
        assert all(o.started for o in await dead.start(batch))
        await redis.execute_command("XCLAIM", STREAM, GROUP, name, 0,
                                    *(d.entry_id for d in batch), "IDLE", 60_000, "JUSTID")
    assert (await redis.xpending(STREAM, GROUP))["pending"] == n

    # The timer tick is far away (5 s): taking back one slot-sized batch per tick would need
    # 300 / 4 * 5 s > 6 minutes; sweeping until none is left needs the jobs' run time.
    lease_s = 10.0  # the renewal period (the same tick) may be at most half the lease
    settings = settings_for(redis_url, tmp_path, lease_timeout_s=lease_s, reclaim_interval_s=5,
                            max_concurrent_jobs=2)
    t0 = time.monotonic()
    async with running_worker(settings, name="a"), running_worker(settings, name="b"):
        async def all_done() -> bool:
            return await succeeded(redis) >= n

        await eventually(all_done, timeout=lease_s + n * 0.02 / 4 + 45, interval=0.1,
                         what="every stranded job finished")
    took = time.monotonic() - t0
    print(f"{n} stranded entries back and finished in {took:.1f} s")
    assert await succeeded(redis) == n
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(KEYS.job(job_id), "status", "deliveries", "worker")
        rows = await pipe.execute()
    assert all(status == "succeeded" and deliveries == "2" and worker in ("a", "b")
               for status, deliveries, worker in rows)
    assert {w for *_, w in rows} == {"a", "b"}  # both took their share


@pytest.mark.slow
async def test_sigkill_strands_at_most_twice_the_slots(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    n, slots, kills = 3000, 4, 3
    await submit_many(producer, n, job())
    settings = settings_for(redis_url, tmp_path, max_concurrent_jobs=slots,
                            lease_timeout_s=1.0, reclaim_interval_s=0.2)
    stranded: list[int] = []
    for k in range(kills):
        before = await succeeded(redis)
        proc = spawn_worker(settings, tmp_path / f"victim-{k}.log")

        async def busy(before: int = before) -> bool:  # killed in full flow
            return await succeeded(redis) >= before + 200

        await eventually(busy, timeout=60, what="the worker running jobs")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        summary = await redis.xpending(STREAM, GROUP)
        stranded.append(sum(int(c["pending"]) for c in summary["consumers"]
                            if f"-{proc.pid}-" in c["name"]))  # host-pid-random
    print(f"entries stranded per SIGKILL (slots={slots}): {stranded}")
    assert all(s <= 2 * slots for s in stranded), stranded

    async with running_worker(settings):
        async def all_done() -> bool:
            return await succeeded(redis) >= n

        await eventually(all_done, timeout=120, interval=0.1, what="every job finished")
    assert await succeeded(redis) == n  # a job whose final write was lost ran again, once
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_the_group_lists_the_workers_that_are_alive(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """Every worker start added a consumer that was never removed. Now a stop removes its own,
    and a sweep removes those of gone workers once they hold nothing; a consumer whose worker
    still has a heartbeat stays."""
    held = QueueConsumer(redis, KEYS, "gone-4", StreamLimits())
    await held.ensure_groups()
    for name in ("gone-1", "gone-2", "alive-3"):
        await redis.execute_command("XGROUP", "CREATECONSUMER", STREAM, GROUP, name)
    await redis.hset(KEYS.worker("alive-3"), "worker_id", "alive-3")  # a live heartbeat
    job_id = (await Producer(redis).submit_training(job("noop"))).job_id
    [entry] = await held.read(redis, 1, 100)  # holds the job's entry: kept until it is back

    async def consumers() -> set[str]:
        return {c["name"] for c in await redis.xinfo_consumers(STREAM, GROUP)}

    settings = settings_for(redis_url, tmp_path, lease_timeout_s=0.5, reclaim_interval_s=0.1)
    async with running_worker(settings, name="w") as worker:
        assert worker.reclaimer.gone_after_ms == 1500

        async def only_live() -> bool:
            return await consumers() == {"w", "alive-3"}

        await eventually(only_live, timeout=30, what="the gone workers' consumers removed")
        assert (await Producer(redis).wait(job_id, timeout=10)).status.value == "succeeded"
    assert await consumers() == {"alive-3"}  # the stop removed its own
    assert entry.job_id == job_id


# At default settings (lease 30 s, heartbeat every 2 s, orphan check every 1 s), without FAST.
DEFAULTS = {"lease_timeout_s": 30.0, "reclaim_interval_s": None, "heartbeat_interval_s": 2.0,
            "block_ms": 5000, "orphan_check_s": 1.0}


async def _started_by(producer: Producer, job_id: str, worker_type: str = "diagnostic"
                      ) -> list[str]:
    """The workers that started the job, in order (from its own event stream)."""
    entries = await producer.redis.xrange(QueueKeys(worker_type).job_events(job_id))
    events = [parse_event(entry_id, fields) for entry_id, fields in entries]
    return [str(getattr(e, "worker", "")) for e in events if e.type == "started"]


async def test_a_sigkilled_workers_job_restarts_before_its_lease_ends(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """The survivor claims the dead worker's running job once the dead one's heartbeat has
    expired (three intervals): well before LEASE_TIMEOUT_S. The old attempt stays fenced."""
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, **DEFAULTS)
    victim = spawn_worker(settings, tmp_path / "victim.log")
    job_id = (await producer.submit_training(job("sleep", seconds=60, steps=600))).job_id

    async def running() -> bool:
        return (await producer.get(job_id)).status.value == "running"

    await eventually(running, timeout=60, what="the job running on the victim")
    async with running_worker(settings) as survivor:
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(10)

        async def restarted() -> bool:
            return survivor.name in await _started_by(producer, job_id)

        # the lease alone would take 30 s: a restart inside 25 s is the heartbeat's doing
        await eventually(restarted, timeout=25, interval=0.1, what="restart on the survivor")
        took = time.monotonic() - killed
        record = await producer.get(job_id)
        assert record.deliveries == 2 and record.worker == survivor.name
        await producer.cancel(job_id)
    print(f"SIGKILL -> restarted on the survivor: {took:.1f} s (lease 30 s)")


async def test_a_live_worker_busy_with_cpu_heavy_jobs_keeps_them(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """Every slot of worker A runs a CPU-heavy fit for longer than a heartbeat TTL while an idle
    worker B checks for orphans every second: A's heartbeat goes on (its event loop is not the
    jobs' thread), so B takes nothing and each job starts once, on A."""
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, "sklearn", max_concurrent_jobs=2,
                            **DEFAULTS)
    a = spawn_worker(settings, tmp_path / "a.log")
    heavy = TrainingRequest(model_type="random_forest", data_path="builtin:digits",
                            hyperparameters={"n_estimators": 1500})  # type: ignore[arg-type]
    jobs = [(await producer.submit_training(heavy)).job_id for _ in range(2)]

    async def both_running() -> bool:
        return all([(await producer.get(j)).status.value == "running" for j in jobs])

    try:
        await eventually(both_running, timeout=90, what="A running both jobs")
        async with running_worker(settings) as b:
            results = [await producer.result(j, timeout=180) for j in jobs]
            starters = [await _started_by(producer, j, "sklearn") for j in jobs]
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(10)
    assert all(r for r in results)
    assert all(len(s) == 1 and s[0] != b.name for s in starters), starters
