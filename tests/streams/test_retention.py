"""Retention: what a job leaves in Redis, and for how long (RESULT_TTL_S, EVENTS_TTL_S).

Real expiry on a real Redis with small TTLs, polled with deadlines (Redis expires a key on
access at the latest, so a poll sees it gone as soon as its TTL passed).
"""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobKind
from streams.consumer import QueueConsumer
from streams.endings import Complete
from streams.events import QUEUED_EVENT_ID, replay
from streams.keys import QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer
from streams.settings import RedisSettings
from tests.support import eventually

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)
NOOP = TrainingRequest(model_type="noop")
# Sized for a slow, busy machine: a TTL of a few seconds, a deadline several times longer.
LIMITS = StreamLimits(retention_s=4, events_ttl_s=1, idempotency_ttl_s=1)
DEADLINE_S = 30.0


RESULT = {"accuracy": 0.5, "note": "a result longer than hash-max-listpack-value " * 2}


async def finished(redis: Redis, producer: Producer, name: str = "w1") -> tuple[str, str]:
    """A no-op job submitted, started and completed with RESULT: its id and its final event's
    id."""
    job_id = (await producer.submit_training(NOOP)).job_id
    worker = QueueConsumer(redis, KEYS, name, producer.limits, 5)
    await worker.ensure_groups()
    [d] = await worker.read(redis, 1, 100)
    await worker.start([d])
    assert await worker.write_endings([Complete.of(d, RESULT)]) == [None]
    return job_id, await redis.hget(KEYS.job(job_id), "final_event_id") or ""


async def gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_a_queued_job_has_no_events_stream_and_a_compact_record(redis: Redis) -> None:
    """A waiting job costs its record (a listpack, not a hashtable: several times smaller), its
    entry and an index entry; it never expires, and its queued event is in the type's feed."""
    sub = await Producer(redis, LIMITS).submit_training(NOOP)
    record = KEYS.job(sub.job_id)
    assert not await redis.exists(KEYS.job_events(sub.job_id))
    assert await redis.object("encoding", record) == "listpack"
    assert await redis.ttl(record) == -1
    assert await redis.zscore(KEYS.jobs, sub.job_id) is not None
    feed = [f for _, f in await redis.xrange(KEYS.events) if f["job_id"] == sub.job_id]
    assert [(f["type"], f["event_id"]) for f in feed] == [("queued", QUEUED_EVENT_ID)]


async def test_events_expire_after_events_ttl_then_the_record_after_result_ttl(
        redis: Redis) -> None:
    producer = Producer(redis, LIMITS)
    job_id, _ = await finished(redis, producer)
    record, events, result = KEYS.job(job_id), KEYS.job_events(job_id), KEYS.job_result(job_id)
    assert await redis.pttl(events) <= 1000 and await redis.pttl(events) != -1  # -2: gone
    assert 1000 < await redis.pttl(record) <= 4000 and 1000 < await redis.pttl(result) <= 4000
    # The long result is in its own key: the record stays a listpack.
    assert await redis.object("encoding", record) == "listpack"
    await eventually(lambda: gone(redis, events), DEADLINE_S, what="the events expired")
    assert await redis.exists(record)  # the result is still there
    assert (await producer.get(job_id)).result == RESULT
    await eventually(lambda: gone(redis, record), DEADLINE_S, what="the record expired")
    assert await gone(redis, result)
    # The index entry goes when a later job finishes (it prunes entries past the retention).
    await finished(redis, producer)
    assert await redis.zscore(KEYS.jobs, job_id) is None


async def test_the_events_ttl_never_outlives_the_result_ttl(redis: Redis) -> None:
    """An events stream outliving its record could not be replayed (no status): capped."""
    producer = Producer(redis, StreamLimits(retention_s=30, events_ttl_s=3600))
    job_id, _ = await finished(redis, producer)
    assert 0 < await redis.ttl(KEYS.job_events(job_id)) <= 30


async def test_idempotency_keys_expire(redis: Redis) -> None:
    producer = Producer(redis, LIMITS)
    sub = await producer.submit_training(NOOP, idempotency_key="retention-test")
    key = KEYS.idempotency("retention-test")
    assert await redis.pttl(key) <= 1000 and await redis.pttl(key) != -1  # -2: gone already
    await eventually(lambda: gone(redis, key), DEADLINE_S, what="the idempotency key expired")
    again = await producer.submit_training(NOOP, idempotency_key="retention-test")
    assert again.job_id != sub.job_id and not again.duplicate


async def test_replay_of_a_queued_job_is_its_queued_event(redis: Redis) -> None:
    sub = await Producer(redis, LIMITS).submit_training(NOOP)
    history = await replay(redis, KEYS, sub.job_id)
    assert history.status == "queued" and not history.finished
    [(event_id, fields)] = history.entries
    assert event_id == QUEUED_EVENT_ID and fields["type"] == "queued"
    assert orjson.loads(fields["data"]) == {"position": 1, "worker_type": "diagnostic"}
    assert fields["ts"] == await redis.hget(KEYS.job(sub.job_id), "created_at")
    assert (await replay(redis, KEYS, sub.job_id, QUEUED_EVENT_ID)).entries == []


async def test_replay_once_the_events_expired_is_queued_then_the_final_event(
        redis: Redis) -> None:
    """The events in between are gone; the final one comes back under its own id, with the
    result, so a client resuming from any id it saw gets the end exactly once."""
    producer = Producer(redis, LIMITS)
    job_id, final_id = await finished(redis, producer)
    stored = [(i, f["type"]) for i, f in await redis.xrange(KEYS.job_events(job_id))]
    assert stored[-1] == (final_id, "succeeded")
    await eventually(lambda: gone(redis, KEYS.job_events(job_id)), DEADLINE_S,
                     what="the events expired")
    history = await replay(redis, KEYS, job_id)
    assert [(i, f["type"]) for i, f in history.entries] == [
        (QUEUED_EVENT_ID, "queued"), (final_id, "succeeded")]
    assert orjson.loads(history.entries[-1][1]["data"]) == {"result": RESULT}
    assert history.finished
    started_id = stored[0][0]  # a client that saw `started` before the expiry
    assert [i for i, _ in (await replay(redis, KEYS, job_id, started_id)).entries] == [final_id]
    assert (await replay(redis, KEYS, job_id, final_id)).entries == []
    # Producer.events and Producer.result answer the same from the record.
    assert [e.type for e in [e async for e in producer.events(job_id)]] == ["queued",
                                                                           "succeeded"]
    assert await producer.result(job_id, timeout=10) == RESULT


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "604800:3600"),
    ({"JOB_RETENTION_S": "50"}, "50:50"),  # the deprecated alias; events capped by it
    ({"JOB_RETENTION_S": "50", "RESULT_TTL_S": "80"}, "80:80"),
    ({"RESULT_TTL_S": "80", "EVENTS_TTL_S": "20"}, "80:20"),
])
def test_retention_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                            expected: str) -> None:
    for name in ("JOB_RETENTION_S", "RESULT_TTL_S", "EVENTS_TTL_S"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert RedisSettings().limits.ttls == expected
