"""A request is stored once: an inference job's inline inputs live in its record only, and the
worker gets them from start.lua; a record whose inputs were damaged fails that job alone."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from schemas.requests import InferenceRequest, TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.support import run_burst, settings_for

KEYS = QueueKeys("diagnostic")


async def test_inputs_are_stored_once_and_reach_the_worker(redis: Redis, redis_url: str,
                                                           tmp_path: Path) -> None:
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path)
    model = await producer.submit_training(TrainingRequest(model_type="noop"))
    await run_burst(settings)
    rows = [[float(i)] * (i % 5 + 1) for i in range(2_000)]  # ~40 KB of inputs
    subs = [await producer.submit_inference(InferenceRequest(model_id=model.job_id,
                                                             inputs=rows[: 100 * (n + 1)]))
            for n in range(3)]
    bad = await producer.submit_inference(InferenceRequest(model_id=model.job_id,
                                                           inputs=[[1.0]]))
    entries = await redis.xrange(KEYS.stream(JobKind.INFERENCE))
    assert len(entries) == 4 and all("inputs" not in f for _, f in entries)
    entry_bytes = sum(len(k) + len(v) for _, f in entries for k, v in f.items())
    assert entry_bytes < 4 * 1024, "an entry must not carry the request's inputs"
    assert (await redis.hget(KEYS.job(subs[2].job_id), "inputs") or "").startswith("[[0.0]")
    await redis.hset(KEYS.job(bad.job_id), "inputs", '{"not": "rows"}')  # damaged by hand

    await run_burst(settings)  # one read: the four start in one batch
    recs = [await producer.get(s.job_id) for s in subs]
    for n, rec in enumerate(recs):
        assert rec.status is JobStatus.SUCCEEDED, rec.error
        assert rec.result is not None and rec.result["n"] == 100 * (n + 1)
        assert rec.result["predictions"] == [len(r) for r in rows[: 100 * (n + 1)]]
    status = await redis.hget(KEYS.job(bad.job_id), "status")
    error = await redis.get(KEYS.job_result(bad.job_id))  # a failed job's error is kept there
    assert status == "failed" and error is not None
    assert '"record_malformed"' in error and "not a list of rows" in error
