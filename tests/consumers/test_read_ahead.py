"""Read-ahead of short jobs with a real worker: jobs started ahead wait for a thread within the
2 x MAX_CONCURRENT_JOBS bound, their timeout counts from when their code begins, and one that
waits too long (the jobs before it turned out long) is handed back and runs elsewhere, once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.keys import GROUP, QueueKeys
from streams.producer import Producer
from tests.support import eventually, running_worker, settings_for

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)


def job(model_type: str = "noop", timeout_s: float | None = None, **hp: Any
        ) -> tuple[TrainingRequest, None]:
    return TrainingRequest.model_validate({"model_type": model_type, "hyperparameters": hp,
                                           "timeout_s": timeout_s}), None


async def events(redis: Redis, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f["type"], json.loads(f["data"])) for _, f in
            await redis.xrange(KEYS.job_events(job_id))]


async def test_jobs_read_ahead_wait_for_a_thread_and_time_out_from_their_begin(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, max_concurrent_jobs=2, read_ahead_s=1.0)
    async with running_worker(settings) as worker:
        await producer.wait((await producer.submit_training(job()[0])).job_id, timeout=15)
        assert worker.read_ahead == 2  # the noop's run time says a slot frees within 1 s
        # 4 jobs of 0.6 s for 2 slots: 2 run, 2 wait ~0.6 s in the threads' queue; each may
        # run 1 s, which the waiting ones would pass if their wait counted.
        subs = await producer.submit_training_batch(
            [job("sleep", timeout_s=1.0, seconds=0.6, steps=3)] * 4)

        async def four_started() -> bool:
            statuses = [(await producer.get(s.job_id)).status for s in subs]
            return statuses == [JobStatus.RUNNING] * 4

        await eventually(four_started, what="all four jobs started (two read ahead)")
        held = await redis.xpending(STREAM, GROUP)
        assert held["pending"] == 4 <= 2 * settings.max_concurrent_jobs
        records = [await producer.wait(s.job_id, timeout=20) for s in subs]
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 4, [r.error for r in records]
    # The two read ahead began their code once the first two ended.
    durations = sorted(r.result["duration_s"] for r in records if r.result)
    assert all(0.5 < d < 1.0 for d in durations), durations


async def test_a_job_read_ahead_that_waits_too_long_is_handed_back_and_runs_elsewhere(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    first = settings_for(redis_url, tmp_path, max_concurrent_jobs=1, read_ahead_s=1.0,
                         read_ahead_stale_s=0.3, heartbeat_interval_s=0.1)
    async with running_worker(first, name="first") as worker:
        await producer.wait((await producer.submit_training(job()[0])).job_id, timeout=15)
        assert worker.read_ahead == 1
        long, short = await producer.submit_training_batch(
            [job("sleep", seconds=30, steps=300), job()])

        async def handed_back() -> bool:
            return "requeued" in [t for t, _ in await events(redis, short.job_id)]

        await eventually(handed_back, timeout=15, what="the read-ahead job handed back")
        (tmp_path / "b").mkdir()
        async with running_worker(settings_for(redis_url, tmp_path / "b"), name="second"):
            rec = await producer.wait(short.job_id, timeout=15)
        assert (await producer.get(long.job_id)).status is JobStatus.RUNNING
        await producer.cancel(long.job_id)
    assert rec.status is JobStatus.SUCCEEDED and rec.result is not None
    assert rec.result["worker"] == "second"
    history = await events(redis, short.job_id)
    assert [t for t, _ in history] == ["started", "requeued", "started", "succeeded"]
    assert history[0][1]["worker"] == "first" and history[2][1]["worker"] == "second"
    assert history[1][1]["reason"] == "read ahead, not started in time"
