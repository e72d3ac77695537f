"""A job's own ``max_retries`` in the retry transition (retry.lua): carried in the entry and the
record, kept through promotion and hand-back, and enforced by the script itself, so that a worker
asking for one retry too many (a bug, or an old worker) fails the job instead."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.consumer import QueueConsumer
from streams.delivery import Delivery
from streams.endings import Handback, Retry
from streams.errors import JobNotFound, NotOwner
from streams.keys import QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)
LIMITS = StreamLimits(retention_s=60)
FLAKY = {"code": "flaky", "message": "try again", "retryable": True}


@pytest.fixture
async def producer(redis: Redis) -> Producer:
    return Producer(redis, LIMITS)


async def consumers(redis: Redis, *names: str) -> list[QueueConsumer]:
    out = [QueueConsumer(redis, KEYS, name, LIMITS) for name in names]
    await out[0].ensure_groups()
    return out


async def submit(producer: Producer, *budgets: int | None) -> list[str]:
    return [(await producer.submit_training(TrainingRequest(
        model_type="noop", max_retries=b))).job_id for b in budgets]  # type: ignore[call-arg]


async def read(c: QueueConsumer, n: int) -> list[Delivery]:
    got = await c.read(c.redis, n, 100)
    assert len(got) == n
    return got


async def test_the_budget_is_in_the_entry_and_the_record_and_empty_when_unset(
        redis: Redis, producer: Producer) -> None:
    ids = await submit(producer, 0, None, 7)
    entries = [f for _, f in await redis.xrange(STREAM)]
    assert [e["max_retries"] for e in entries] == ["0", "", "7"]
    assert [(await producer.get(i)).max_retries for i in ids] == [0, None, 7]
    assert not await redis.hexists(KEYS.job(ids[1]), "max_retries")  # left out of the record


async def test_retry_refuses_past_the_records_budget_in_one_round_trip(
        redis: Redis, producer: Producer) -> None:
    """Retries of several jobs written at once: one within its budget, one past it, one with
    none of its own (the script leaves that to the worker), a duplicate of the first, one
    fenced (another consumer's entry) and one whose record is gone."""
    a, b = await consumers(redis, "a", "b")
    within, past, unset, gone = await submit(producer, 1, 0, None, 2)
    mine = await read(a, 4)
    (theirs_id,) = await submit(producer, 1)
    theirs = await read(b, 1)
    await a.start(mine)
    await b.start(theirs)
    await redis.delete(KEYS.job(gone))

    results = await a.write_endings([Retry.of(d, FLAKY, 0) for d in mine]
                                    + [Retry.of(mine[0], FLAKY, 0), Retry.of(theirs[0], FLAKY, 0)])
    assert [type(r).__name__ if r else None for r in results] == [
        None, None, None, "JobNotFound", "NotOwner", "NotOwner"]

    rec = await producer.get(within)
    assert rec.status is JobStatus.RETRYING and rec.attempt == 2 and rec.max_retries == 1
    rec = await producer.get(past)
    assert rec.status is JobStatus.FAILED and rec.attempt == 1 and rec.error is not None
    assert rec.error.code == "flaky" and not rec.error.retryable
    assert "gave up after 1 attempts: the job's max_retries is 0" in rec.error.message
    assert (await producer.get(unset)).status is JobStatus.RETRYING
    assert not await redis.exists(KEYS.job(gone))
    assert (await producer.get(theirs_id)).status is JobStatus.RUNNING
    assert sorted(await redis.zrange(KEYS.delayed, 0, -1)) == sorted([within, unset])
    assert {e for e, _ in await redis.xrange(STREAM)} == {theirs[0].entry_id}
    stats = await redis.hgetall(KEYS.stats)
    assert stats["retried"] == "2" and stats["failed"] == "1" and stats["fenced"] == "2"
    failed = [f for _, f in await redis.xrange(KEYS.events) if f["job_id"] == past]
    assert [f["type"] for f in failed][-1] == "failed"


async def test_the_budget_survives_promotion_and_hand_back(
        redis: Redis, producer: Producer) -> None:
    """A job with max_retries 1: retried once, promoted, handed back by a stopping worker,
    started again; its second retry is refused, whoever asks."""
    (a,) = await consumers(redis, "a")
    (job_id,) = await submit(producer, 1)
    [d] = await read(a, 1)
    await a.start([d])
    assert await a.write_endings([Retry.of(d, FLAKY, 0)]) == [None]
    assert await a.promote_due(now_ms=2**62) == 1
    [d] = await read(a, 1)
    assert d.fields["max_retries"] == "1" and d.message and d.message.max_retries == 1
    await a.start([d])
    assert await a.write_endings([Handback(d, "worker shutdown")]) == [None]
    [d] = await read(a, 1)
    assert d.fields["max_retries"] == "1" and d.fields["attempt"] == "2"
    await a.start([d])
    assert await a.write_endings([Retry.of(d, FLAKY, 0)]) == [None]
    rec = await producer.get(job_id)
    assert rec.status is JobStatus.FAILED and rec.attempt == 2 and rec.max_retries == 1
    assert await redis.zcard(KEYS.delayed) == 0 and await redis.xlen(STREAM) == 0


async def test_a_refused_retry_of_a_job_not_owned_or_gone_changes_nothing(
        redis: Redis, producer: Producer) -> None:
    """The budget check comes after the ownership check: a fenced retry of a job past its
    budget does not fail it."""
    a, b = await consumers(redis, "a", "b")
    (job_id,) = await submit(producer, 0)
    [d] = await read(a, 1)
    await a.start([d])
    [err] = await b.write_endings([Retry.of(d, FLAKY, 0)])
    assert isinstance(err, NotOwner)
    assert (await producer.get(job_id)).status is JobStatus.RUNNING
    await redis.delete(KEYS.job(job_id))
    [err] = await a.write_endings([Retry.of(d, FLAKY, 0)])
    assert isinstance(err, JobNotFound)
    assert not await redis.exists(KEYS.job(job_id))
