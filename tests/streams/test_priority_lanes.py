"""Priority lanes and the type's maxima, in the scripts themselves: submit puts each job in its
lane and bounds what it asks by the maxima its workers published (``ai:{type}:limits``), in
batches mixing lanes, values above and within the maxima, unset ones and duplicates; read.lua
takes exactly ``count`` entries over every stream, high lanes first, with the normal lanes' share;
cancel, promote and hand-back keep a job in its own lane."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from schemas.requests import InferenceRequest, TrainingRequest
from schemas.status import JobKind, JobStatus, Priority
from streams.consumer import LaneShare, QueueConsumer
from streams.endings import Handback, Retry
from streams.keys import GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer

KEYS = QueueKeys("diagnostic")
NORMAL, HIGH = KEYS.lanes(JobKind.TRAINING)
LIMITS = StreamLimits(retention_s=60)


def job(priority: str = "normal", **extra: Any) -> tuple[TrainingRequest, str | None]:
    key = extra.pop("key", None)
    return TrainingRequest.model_validate({"model_type": "noop", "priority": priority,
                                           **extra}), key


@pytest.fixture
async def producer(redis: Redis) -> Producer:
    return Producer(redis, LIMITS)


async def consumer(redis: Redis, name: str = "w", weight: int = 9) -> QueueConsumer:
    c = QueueConsumer(redis, KEYS, name, LIMITS, priority_weight=weight)
    await c.ensure_groups()
    return c


async def lane_ids(redis: Redis, stream: str) -> list[str]:
    return [f["job_id"] for _, f in await redis.xrange(stream)]


async def test_each_job_of_a_batch_goes_to_its_lane(redis: Redis, producer: Producer) -> None:
    items = [job(), job("high"), job("normal"), job("high", key="k1"), job(), job("high")]
    out = await producer.submit_training_batch(items)
    ids = [o.job_id for o in out]
    assert await lane_ids(redis, HIGH) == [ids[1], ids[3], ids[5]]
    assert await lane_ids(redis, NORMAL) == [ids[0], ids[2], ids[4]]
    assert [o.stream for o in out] == [NORMAL, HIGH, NORMAL, HIGH, NORMAL, HIGH]
    # Positions count within the lane: the third high job is third in its lane.
    positions = [int(await redis.hget(KEYS.job(i), "position") or 0) for i in ids]
    assert positions == [1, 1, 2, 2, 3, 3]
    records = [await producer.get(i) for i in ids]
    assert [r.priority for r in records] == [Priority.NORMAL, Priority.HIGH] * 3
    assert await redis.hget(KEYS.job(ids[0]), "priority") is None  # normal: no field stored
    # The same key again: the earlier job, its lane in the answer; nothing new written.
    [dup] = await producer.submit_training_batch([job("high", key="k1")])
    assert dup.duplicate and dup.job_id == ids[3] and dup.stream == HIGH
    assert await redis.xlen(HIGH) == 3


async def test_the_types_maxima_bound_a_batch_job_by_job(redis: Redis,
                                                          producer: Producer) -> None:
    await redis.hset(KEYS.limits, mapping={"max_retries": "2", "max_timeout_s": "60.0",
                                           "max_priority": "normal"})
    items = [job("high", max_retries=5, timeout_s=100),  # above both: lowered, normal lane
             job(max_retries=1, timeout_s=30),  # within: kept
             job(),  # unset: stays unset (the worker's defaults apply)
             job("high", max_retries=2, timeout_s=60, key="same"),  # at the maxima
             job("high", max_retries=2, timeout_s=60, key="same")]  # the same job again
    out = await producer.submit_training_batch(items)
    assert out[3].job_id == out[4].job_id and out[4].duplicate
    records = [await producer.get(o.job_id) for o in out[:4]]
    assert [(r.max_retries, r.timeout_s, r.priority) for r in records] == [
        (2, 60.0, Priority.NORMAL), (1, 30.0, Priority.NORMAL), (None, None, Priority.NORMAL),
        (2, 60.0, Priority.NORMAL)]
    entries = {f["job_id"]: f for _, f in await redis.xrange(NORMAL)}
    assert (entries[out[0].job_id]["max_retries"], entries[out[0].job_id]["timeout_s"]) == \
        ("2", "60")
    assert await redis.xlen(HIGH) == 0 and len(entries) == 4
    # Maxima that allow the high lane: the lane is kept, larger values are still lowered.
    await redis.hset(KEYS.limits, "max_priority", "high")
    single = await producer.submit_training(job("high", max_retries=9)[0])
    assert single.stream == HIGH and (await producer.get(single.job_id)).max_retries == 2


async def test_no_published_maxima_keep_what_the_job_asks(redis: Redis,
                                                          producer: Producer) -> None:
    sub = await producer.submit_training(job("high", max_retries=1000, timeout_s=3600)[0])
    rec = await producer.get(sub.job_id)
    assert (rec.max_retries, rec.timeout_s, rec.priority) == (1000, 3600.0, Priority.HIGH)


async def test_inference_jobs_have_lanes_too(redis: Redis, producer: Producer) -> None:
    model = await producer.submit_training(job()[0])
    await redis.hset(KEYS.job(model.job_id), "status", "succeeded")
    sub = await producer.submit_inference(InferenceRequest.model_validate(
        {"model_id": model.job_id, "inputs": [[1]], "priority": "high"}))
    assert sub.stream == KEYS.stream(JobKind.INFERENCE, Priority.HIGH)
    assert await redis.xlen(sub.stream) == 1


async def test_read_takes_exactly_count_high_lanes_first(redis: Redis,
                                                         producer: Producer) -> None:
    c = await consumer(redis)
    model = await producer.submit_training(job()[0])
    await redis.hset(KEYS.job(model.job_id), "status", "succeeded")
    normal = [o.job_id for o in await producer.submit_training_batch([job()] * 6)]
    high = [o.job_id for o in await producer.submit_training_batch([job("high")] * 3)]
    infer = await producer.submit_inference_batch([
        (InferenceRequest.model_validate({"model_id": model.job_id, "inputs": [[1]],
                                          "priority": p}), None) for p in ("high", "normal")])
    got = await c.read(redis, 5, 100)  # 4 high entries wait over two streams: all, then 1
    assert [d.job_id for d in got] == [*high, infer[0].job_id, model.job_id]
    assert [d.kind for d in got] == [JobKind.TRAINING] * 3 + [JobKind.INFERENCE, JobKind.TRAINING]
    got = await c.read(redis, 4, 100)
    assert [d.job_id for d in got] == normal[:4]
    got = await c.read(redis, 10, 100)  # what is left, across both kinds
    assert sorted(d.job_id for d in got) == sorted([*normal[4:], infer[1].job_id])
    assert await c.read(redis, 10, 50) == []
    pending = await redis.xpending(NORMAL, GROUP)
    assert pending["pending"] == 7  # nothing read twice, nothing lost


async def test_a_high_backlog_leaves_the_normal_lane_its_share(redis: Redis,
                                                               producer: Producer) -> None:
    c = await consumer(redis, weight=3)
    normal = {o.job_id for o in await producer.submit_training_batch([job()] * 5)}
    high = {o.job_id for o in await producer.submit_training_batch([job("high")] * 12)}
    order, seen = [], []
    for _ in range(8):
        got = await c.read(redis, 2, 100)
        seen += [d.job_id for d in got]
        order += ["n" if d.job_id in normal else "h" for d in got]
    # Every 3 high entries earn the normal lane one entry ahead of the high lane at the next
    # read (reads of 2 here); once the high lane is empty, the normal one has every slot.
    assert order == ["h", "h", "h", "h", "n", "h", "h", "h", "n", "h", "h", "h", "n", "h",
                     "h", "n"]
    assert len(set(seen)) == 16 and high <= set(seen)  # none twice, every high one


def test_the_share_restarts_when_the_normal_lane_was_empty() -> None:
    share = LaneShare(weight=2)
    share.took(0, 0, 4)
    assert share.normal_first() == 2
    share.took(2, 1, 1)  # asked 2, only 1 waited: nothing is owed any more
    assert share.normal_first() == 0 and share.credit == 0.5
    share.took(0, 0, 3)
    assert share.normal_first() == 2
    share.took(2, 2, 0)
    assert share.credit == 0


async def test_cancel_promote_and_handback_keep_the_jobs_lane(redis: Redis,
                                                              producer: Producer) -> None:
    c = await consumer(redis)
    queued, retried, handed = [
        o.job_id for o in await producer.submit_training_batch([job("high")] * 3)]
    assert await producer.cancel(queued) is JobStatus.CANCELLED  # never delivered: deleted
    assert await lane_ids(redis, HIGH) == [retried, handed]
    taken = await c.read(redis, 2, 100)
    await c.start(taken)
    by_id = {d.job_id: d for d in taken}
    results = await c.write_endings([
        Retry(by_id[retried], '{"code":"io","message":"x","retryable":true}', 0, ""),
        Handback(by_id[handed], "shutdown")])
    assert results == [None, None]
    assert await lane_ids(redis, HIGH) == [handed]  # handed back at once, in its lane
    assert await c.promote_due(2**62) == 1
    assert await lane_ids(redis, HIGH) == [handed, retried]
    assert await redis.xlen(NORMAL) == 0
