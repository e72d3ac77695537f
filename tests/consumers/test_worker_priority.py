"""Priority and the type's maxima with a real worker: high-priority jobs overtake a backlog of
normal ones without starving it, and the maxima a worker publishes at start (MAX_RETRIES,
MAX_JOB_TIMEOUT_S, MAX_PRIORITY) bound the jobs submitted afterwards."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus, Priority
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.support import eventually, run_burst, running_worker, settings_for

KEYS = QueueKeys("diagnostic")


def noop(priority: str = "normal", **extra: object) -> tuple[TrainingRequest, None]:
    return TrainingRequest.model_validate({"model_type": "noop", "priority": priority,
                                           **extra}), None


async def start_order(redis: Redis) -> list[str]:
    """Job ids in the order their jobs started, from the type's feed."""
    return [f["job_id"] for _, f in await redis.xrange(KEYS.events) if f["type"] == "started"]


async def test_high_priority_overtakes_a_backlog_of_normal_jobs(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    normal = [o.job_id for o in await producer.submit_training_batch([noop()] * 40)]
    high = [o.job_id for o in await producer.submit_training_batch([noop("high")] * 5)]
    await run_burst(settings_for(redis_url, tmp_path, max_concurrent_jobs=1,
                                 priority_weight=9))
    order = await start_order(redis)
    assert sorted(order) == sorted(normal + high)  # each ran once
    assert set(order[:5]) == set(high), order[:8]  # all five before any of the 40
    assert order[5:] == normal  # then the normal lane, in its own order
    for job_id in high + normal[:3]:
        assert (await producer.get(job_id)).status is JobStatus.SUCCEEDED


async def test_a_high_backlog_does_not_starve_the_normal_lane(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    normal = set(o.job_id for o in await producer.submit_training_batch([noop()] * 10))
    await producer.submit_training_batch([noop("high")] * 60)
    await run_burst(settings_for(redis_url, tmp_path, max_concurrent_jobs=2,
                                 priority_weight=4))
    order = await start_order(redis)
    first_40 = [j in normal for j in order[:40]]
    # About one start in five goes to the normal backlog while high jobs wait.
    assert 5 <= sum(first_40) <= 10, first_40


async def test_a_worker_publishes_its_types_maxima(redis: Redis, redis_url: str,
                                                   tmp_path: Path) -> None:
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, max_retries=1, max_job_timeout_s=90,
                            max_priority="normal")
    async with running_worker(settings):
        async def published() -> bool:
            return await redis.hgetall(KEYS.limits) == {
                "max_retries": "1", "max_timeout_s": "90.0", "max_priority": "normal"}

        await eventually(published, what="the type's maxima published")
        sub = await producer.submit_training(noop("high", max_retries=5, timeout_s=3600)[0])
        rec = await producer.wait(sub.job_id, timeout=15)
    assert rec.status is JobStatus.SUCCEEDED
    assert (rec.priority, rec.max_retries, rec.timeout_s) == (Priority.NORMAL, 1, 90.0)
    assert sub.stream == KEYS.stream(JobKind.TRAINING)
