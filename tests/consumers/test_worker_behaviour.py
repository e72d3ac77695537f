"""A real worker (in this event loop) against a real Redis: retries, failures, dead letters,
cancellation, lease renewal, bounded memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.errors import JobCancelled, JobFailed
from streams.keys import QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer
from tests.support import eventually, run_burst, running_worker, settings_for

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)


def job(model_type: str = "noop", **hp: object) -> TrainingRequest:
    return TrainingRequest(model_type=model_type, hyperparameters=hp)  # type: ignore[arg-type]


async def events(redis: Redis, job_id: str) -> list[str]:
    return [f["type"] for _, f in await redis.xrange(KEYS.job_events(job_id))]


async def test_retryable_error_retries_with_backoff_then_succeeds(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, max_retries=3)):
        sub = await producer.submit_training(job("fail", error="retryable", fail_times=2))
        rec = await producer.wait(sub.job_id, timeout=15)
    assert rec.status is JobStatus.SUCCEEDED and rec.attempt == 3
    assert (await events(redis, sub.job_id)).count("retrying") == 2


async def test_bad_input_fails_at_once(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, max_retries=3)):
        sub = await producer.submit_training(job("fail", error="fatal"))
        rec = await producer.wait(sub.job_id, timeout=10)
    assert rec.status is JobStatus.FAILED and rec.attempt == 1
    assert rec.error is not None and rec.error.code == "diagnostic"
    assert "retrying" not in await events(redis, sub.job_id)


async def test_retries_exhausted_fail(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, max_retries=1)):
        sub = await producer.submit_training(job("fail", error="retryable"))
        rec = await producer.wait(sub.job_id, timeout=10)
    assert rec.status is JobStatus.FAILED and rec.attempt == 2
    assert rec.error is not None and "gave up after 2 attempts" in rec.error.message


def flaky(max_retries: int | None) -> TrainingRequest:
    return TrainingRequest(model_type="fail", hyperparameters={"error": "retryable"},
                           max_retries=max_retries)  # type: ignore[arg-type]


@pytest.mark.parametrize(("own", "worker_max", "retries"), [(0, 3, 0), (1, 3, 1), (10, 1, 1)])
async def test_a_jobs_own_max_retries_bounds_its_retries_within_the_workers(
        redis: Redis, redis_url: str, tmp_path: Path, own: int, worker_max: int,
        retries: int) -> None:
    """Per-job ``max_retries``: 0 fails at once after one attempt, 1 retries once; a job asking
    for more than the worker's MAX_RETRIES gets MAX_RETRIES."""
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, max_retries=worker_max)):
        await eventually(lambda: redis.exists(KEYS.limits), what="the type's maxima")
        sub = await producer.submit_training(flaky(own))
        rec = await producer.wait(sub.job_id, timeout=15)
    assert rec.status is JobStatus.FAILED and rec.attempt == retries + 1
    assert rec.max_retries == min(own, worker_max)  # bounded at submit by the maximum
    assert rec.error is not None and f"gave up after {retries + 1} attempts" in rec.error.message
    assert (await events(redis, sub.job_id)).count("retrying") == retries


async def test_malformed_entry_is_dead_lettered_and_worker_goes_on(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path)):
        # what an operator might type: redis-cli XADD ai:training:{diagnostic}:queue * foo bar
        await redis.execute_command("XADD", STREAM, "*", "foo", "bar")
        await redis.execute_command("XADD", STREAM, "*", "job_id", "job_x", "kind", "training")
        sub = await producer.submit_training(job())
        rec = await producer.wait(sub.job_id, timeout=10)
    assert rec.status is JobStatus.SUCCEEDED
    dead = await redis.xrange(KEYS.dead(JobKind.TRAINING))
    assert len(dead) == 2 and all(f["reason"].startswith("malformed") for _, f in dead)
    assert await redis.xlen(STREAM) == 0


async def test_cancel_running_job_stops_at_step_boundary(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path)):
        sub = await producer.submit_training(job("sleep", seconds=30, steps=300))

        async def running() -> bool:
            return (await producer.get(sub.job_id)).status is JobStatus.RUNNING

        await eventually(running, what="job running")
        assert await producer.cancel(sub.job_id) is JobStatus.RUNNING
        rec = await producer.wait(sub.job_id, timeout=5)
    assert rec.status is JobStatus.CANCELLED
    assert (rec.finished_at or 0) - (rec.started_at or 0) < 10_000
    assert await redis.xlen(STREAM) == 0


async def test_cancel_queued_job_never_runs(redis: Redis, redis_url: str, tmp_path: Path
                                            ) -> None:
    producer = Producer(redis)
    sub = await producer.submit_training(job())
    assert await producer.cancel(sub.job_id) is JobStatus.CANCELLED
    async with running_worker(settings_for(redis_url, tmp_path)):
        later = await producer.submit_training(job())
        await producer.wait(later.job_id, timeout=10)
    assert "started" not in await events(redis, sub.job_id)


async def test_renewed_job_outlives_lease_without_redelivery(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """A job running 6x the lease timeout, with a second worker reclaiming eagerly."""
    producer = Producer(redis)
    fast = settings_for(redis_url, tmp_path, lease_timeout_s=0.5, reclaim_interval_s=0.05)
    async with running_worker(fast, name="a"):
        sub = await producer.submit_training(job("sleep", seconds=3, steps=6))

        async def running() -> bool:
            return (await producer.get(sub.job_id)).worker == "a"

        await eventually(running, what="worker a runs the job")
        async with running_worker(fast, name="b"):
            rec = await producer.wait(sub.job_id, timeout=15)
    assert rec.status is JobStatus.SUCCEEDED and rec.deliveries == 1 and rec.worker == "a"
    assert (await events(redis, sub.job_id)).count("started") == 1


async def test_concurrency_is_bounded_by_slots(redis: Redis, redis_url: str, tmp_path: Path
                                               ) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, max_concurrent_jobs=2)) as w:
        subs = [await producer.submit_training(job("sleep", seconds=0.3, steps=3))
                for _ in range(5)]
        peak = 0
        while not all([(await producer.get(s.job_id)).status.terminal for s in subs]):
            pending = await redis.xpending(STREAM, "workers")
            peak = max(peak, w.executing)
            assert w.executing <= 2
            # nothing read far ahead of free slots: at most the running jobs, the ones whose
            # final write is in flight and what the next free slots will start
            assert pending["pending"] <= 3 * 2
            await asyncio.sleep(0.01)
    assert peak == 2


async def test_memory_stays_flat(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """Thousands of jobs: the stream empties, records and their events expire, capped streams
    stay capped, so the key count returns to where it started."""
    limits = StreamLimits(retention_s=1, type_events_maxlen=500)
    producer = Producer(redis, limits)
    settings = settings_for(redis_url, tmp_path, max_concurrent_jobs=32, job_retention_s=1,
                            type_events_maxlen=500)
    warm = await producer.submit_training(job())
    await run_burst(settings)  # serves until the queue is empty, then stops: no polling
    assert (await producer.get(warm.job_id)).status is JobStatus.SUCCEEDED
    await eventually(lambda: _gone(redis, warm.job_id), timeout=5, what="expiry")
    baseline = await redis.dbsize()
    subs = []
    for _ in range(20):
        subs += await asyncio.gather(*(producer.submit_training(job()) for _ in range(100)))
    await run_burst(settings, timeout=120)
    assert await redis.hget(KEYS.stats, "succeeded") == "2001"
    assert await redis.xlen(STREAM) == 0
    assert len(subs) == 2000

    async def back_to_baseline() -> bool:
        return await redis.dbsize() <= baseline

    await eventually(back_to_baseline, timeout=10, what="records and events to expire")
    last = await producer.submit_training(job())  # its finish prunes the expired index
    await run_burst(settings)
    assert (await producer.get(last.job_id)).status is JobStatus.SUCCEEDED
    assert await redis.zcard(KEYS.jobs) <= 2
    assert await redis.xlen(KEYS.events) < 700


async def _gone(redis: Redis, job_id: str) -> bool:
    return not await redis.exists(KEYS.job(job_id), KEYS.job_events(job_id))


async def test_result_returns_or_raises(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, max_retries=0)):
        ok = await producer.submit_training(job())
        assert (await producer.result(ok.job_id, timeout=10))["ok"] is True
        bad = await producer.submit_training(job("fail", error="fatal"))
        with pytest.raises(JobFailed) as failed:
            await producer.result(bad.job_id, timeout=10)
        assert failed.value.error["code"] == "diagnostic"
        long = await producer.submit_training(job("sleep", seconds=30, steps=300))
        await eventually(lambda: _running(producer, long.job_id), what="job running")
        await producer.cancel(long.job_id)
        with pytest.raises(JobCancelled):
            await producer.result(long.job_id, timeout=10)


async def _running(producer: Producer, job_id: str) -> bool:
    return (await producer.get(job_id)).status is JobStatus.RUNNING


async def test_operators_see_group_and_in_flight_work(redis: Redis, redis_url: str,
                                                      tmp_path: Path) -> None:
    """What `redis-cli XINFO GROUPS` and `XPENDING` show while a job runs."""
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path), name="op-worker"):
        sub = await producer.submit_training(job("sleep", seconds=30, steps=300))
        await eventually(lambda: _running(producer, sub.job_id), what="job running")
        [info] = await redis.xinfo_groups(STREAM)  # XINFO GROUPS
        assert info["name"] == "workers" and info["pending"] == 1 and info["consumers"] == 1
        summary = await redis.xpending(STREAM, "workers")  # XPENDING
        assert summary["pending"] == 1
        assert summary["consumers"] == [{"name": "op-worker", "pending": 1}]
        await producer.cancel(sub.job_id)
        await producer.wait(sub.job_id, timeout=10)


async def test_result_waits_past_the_clients_socket_timeout(redis_url: str,
                                                            tmp_path: Path) -> None:
    """A wait longer than the client's socket timeout blocks in slices instead of failing
    with redis-py's "Timeout reading" (its default socket timeout is 5 s)."""
    from streams.connection import client

    short = client(redis_url, socket_timeout=0.5)
    producer = Producer(short)
    try:
        async with running_worker(settings_for(redis_url, tmp_path)):
            sub = await producer.submit_training(job("sleep", seconds=1.5, steps=1))
            assert (await producer.result(sub.job_id, timeout=30))["slept_s"] >= 1.5
    finally:
        await short.aclose()


async def test_burst_mode_stops_once_the_queue_is_empty(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """BURST=true: the worker serves until nothing is waiting, pending or delayed for a retry,
    then stops by itself; a job waiting out its retry backoff keeps it serving."""
    producer = Producer(redis)
    subs = [await producer.submit_training(TrainingRequest(
        model_type="sleep", hyperparameters={"seconds": 0.05, "steps": 1})) for _ in range(5)]
    flaky = await producer.submit_training(TrainingRequest(
        model_type="fail", hyperparameters={"fail_times": 1, "error": "retryable"}))
    settings = settings_for(redis_url, tmp_path, max_concurrent_jobs=2, retry_backoff_s=0.5)
    worker = await run_burst(settings)
    assert worker.stopped.is_set() and not worker.runs
    for sub in [*subs, flaky]:
        assert (await producer.get(sub.job_id)).status is JobStatus.SUCCEEDED
    assert (await producer.get(flaky.job_id)).attempt == 2  # its retry ran before the stop


async def test_redis_io_jobs_make_their_round_trips_from_the_job_threads(
        redis: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)  # the job's client reads the worker's env
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, max_concurrent_jobs=4)):
        subs = [await producer.submit_training(job("redis_io", round_trips=3))
                for _ in range(20)]
        recs = [await producer.wait(s.job_id, timeout=15) for s in subs]
    assert all(r.status is JobStatus.SUCCEEDED for r in recs)
    assert all(r.result is not None and r.result["round_trips"] == 3 for r in recs)


async def test_redis_io_without_a_plain_redis_url_fails_the_job(
        redis: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path)):
        sub = await producer.submit_training(job("redis_io"))
        rec = await producer.wait(sub.job_id, timeout=10)
    assert rec.status is JobStatus.FAILED
    assert rec.error is not None and "REDIS_URL" in rec.error.message
