from pathlib import Path

from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobStatus
from streams.producer import Producer
from tests.support import running_worker, settings_for


async def test_noop_job_runs_to_success(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path)):
        sub = await producer.submit_training(TrainingRequest(model_type="noop"))
        rec = await producer.wait(sub.job_id, timeout=10)
    assert rec.status is JobStatus.SUCCEEDED
    assert rec.result is not None and rec.result["ok"] is True
