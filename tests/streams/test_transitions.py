"""Each Lua state transition, driven directly through Producer and QueueConsumer."""

from __future__ import annotations

import json

import orjson
import pytest
from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.consumer import QueueConsumer
from streams.delivery import Delivery
from streams.endings import Complete, ConfirmCancel, Fail, Handback, RenewCode, Retry
from streams.errors import IllegalTransition, JobNotFound, NotOwner
from streams.events import replay
from streams.keys import GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)
LIMITS = StreamLimits(retention_s=60)


def consumer(redis: Redis, name: str, max_deliveries: int = 5) -> QueueConsumer:
    return QueueConsumer(redis, KEYS, name, LIMITS, max_deliveries)



async def started(producer: Producer, c: QueueConsumer) -> tuple[str, Delivery]:
    """A job submitted, read and started by ``c``: its id and its delivery."""
    job_id = await submit(producer)
    d = await read_one(c)
    await c.start([d])
    return job_id, d

async def submit(producer: Producer, model_type: str = "noop", **hp: object) -> str:
    req = TrainingRequest(model_type=model_type, hyperparameters=hp)  # type: ignore[arg-type]
    return (await producer.submit_training(req)).job_id


async def read_one(c: QueueConsumer) -> Delivery:
    got = await c.read(c.redis, 1, 100)
    assert len(got) == 1
    return got[0]


async def event_types(redis: Redis, job_id: str) -> list[str]:
    """The job's events as a replay gives them (queued is rebuilt from the record)."""
    return [f["type"] for _, f in (await replay(redis, KEYS, job_id)).entries]


@pytest.fixture
async def setup(redis: Redis) -> tuple[Producer, QueueConsumer]:
    producer = Producer(redis, LIMITS)
    c = consumer(redis, "w1")
    await c.ensure_groups()
    return producer, c


async def test_submit_writes_readable_entry_record_and_event(redis: Redis) -> None:
    producer = Producer(redis, LIMITS)
    job_id = await submit(producer, "sleep", seconds=2)
    [(entry_id, fields)] = await redis.xrange(STREAM)
    assert fields["job_id"] == job_id and fields["model_type"] == "sleep"
    assert fields["attempt"] == "1" and fields["kind"] == "training"
    assert orjson.loads(fields["hyperparameters"])["seconds"] == 2
    record = await redis.hgetall(KEYS.job(job_id))
    assert record["status"] == "queued" and record["entry_id"] == entry_id
    assert record["worker_type"] == "diagnostic"
    assert await event_types(redis, job_id) == ["queued"]
    assert await redis.zscore(KEYS.jobs, job_id) is not None
    assert await redis.hget(KEYS.stats, "submitted") == "1"


async def test_jobs_submitted_before_any_group_are_delivered(redis: Redis) -> None:
    producer = Producer(redis, LIMITS)
    job_id = await submit(producer)
    c = consumer(redis, "late")
    await c.ensure_groups()
    await c.ensure_groups()  # BUSYGROUP is ignored
    d = await read_one(c)
    assert d.job_id == job_id


async def test_start_progress_complete(redis: Redis, setup: tuple[Producer, QueueConsumer]
                                       ) -> None:
    producer, c = setup
    job_id = await submit(producer)
    d = await read_one(c)
    [outcome] = await c.start([d])
    assert outcome.started and d.deliveries == 1 and d.attempt == 1
    assert (await producer.get(job_id)).status is JobStatus.RUNNING
    assert await c.progress(d, {"stage": "x", "percent": 50}) is False
    [res] = await c.write_endings([Complete.of(d, {"accuracy": 0.9})])
    assert res is None
    rec = await producer.get(job_id)
    assert rec.status is JobStatus.SUCCEEDED and rec.result == {"accuracy": 0.9}
    assert await redis.xlen(STREAM) == 0  # acked entries leave the stream
    assert 0 < await redis.ttl(KEYS.job(job_id)) <= 60
    assert 0 < await redis.ttl(KEYS.job_events(job_id)) <= 60
    assert await event_types(redis, job_id) == ["queued", "started", "progress", "succeeded"]


async def test_fail_records_error(redis: Redis, setup: tuple[Producer, QueueConsumer]) -> None:
    producer, c = setup
    job_id, d = await started(producer, c)
    await c.write_endings([Fail.of(d, {"code": "bad", "message": "bad input"})])
    rec = await producer.get(job_id)
    assert rec.status is JobStatus.FAILED and rec.error and rec.error.code == "bad"
    assert await redis.xlen(STREAM) == 0


async def test_retry_then_promote_creates_fresh_entry(
        redis: Redis, setup: tuple[Producer, QueueConsumer]) -> None:
    producer, c = setup
    job_id, d = await started(producer, c)
    await c.write_endings([Retry.of(d, {"code": "flaky", "message": "x", "retryable": True}, 0)])
    rec = await producer.get(job_id)
    assert rec.status is JobStatus.RETRYING and rec.attempt == 2
    assert await redis.xlen(STREAM) == 0 and await redis.zcard(KEYS.delayed) == 1
    assert await c.promote_due(now_ms=2**62) == 1
    d2 = await read_one(c)
    assert d2.job_id == job_id and d2.entry_id != d.entry_id and d2.fields["attempt"] == "2"
    [outcome] = await c.start([d2])
    assert outcome.started and d2.attempt == 2
    assert await event_types(redis, job_id) == ["queued", "started", "retrying", "requeued",
                                                "started"]


async def test_promote_waits_for_due_time(redis: Redis,
                                          setup: tuple[Producer, QueueConsumer]) -> None:
    producer, c = setup
    await submit(producer)
    d = await read_one(c)
    await c.start([d])
    await c.write_endings([Retry.of(d, {"code": "x", "message": "x"}, 60_000)])
    assert await c.promote_due(now_ms=2**62) == 0  # the script checks the server clock
    assert await redis.zcard(KEYS.delayed) == 1


async def test_cancel_queued_removes_entry(redis: Redis) -> None:
    producer = Producer(redis, LIMITS)
    job_id = await submit(producer)
    assert await producer.cancel(job_id) is JobStatus.CANCELLED
    assert await redis.xlen(STREAM) == 0
    assert (await producer.get(job_id)).status is JobStatus.CANCELLED
    with pytest.raises(IllegalTransition):
        await producer.cancel(job_id)
    with pytest.raises(JobNotFound):
        await producer.cancel("job_00000000-0000-0000-0000-000000000000")


async def test_cancel_delivered_but_not_started(
        redis: Redis, setup: tuple[Producer, QueueConsumer]) -> None:
    producer, c = setup
    job_id = await submit(producer)
    d = await read_one(c)
    assert await producer.cancel(job_id) is JobStatus.CANCELLED
    [outcome] = await c.start([d])
    assert not outcome.started and outcome.code == -2
    assert await redis.xlen(STREAM) == 0 and await redis.xpending(STREAM, GROUP) == {
        "pending": 0, "min": None, "max": None, "consumers": []}


async def test_cancel_retrying_removes_delayed(
        redis: Redis, setup: tuple[Producer, QueueConsumer]) -> None:
    producer, c = setup
    job_id, d = await started(producer, c)
    await c.write_endings([Retry.of(d, {"code": "x", "message": "x"}, 60_000)])
    assert await producer.cancel(job_id) is JobStatus.CANCELLED
    assert await redis.zcard(KEYS.delayed) == 0


async def test_cancel_running_flags_then_confirm(
        redis: Redis, setup: tuple[Producer, QueueConsumer]) -> None:
    producer, c = setup
    job_id, d = await started(producer, c)
    assert await producer.cancel(job_id) is JobStatus.RUNNING
    assert await c.progress(d, {"stage": "x"}) is True  # the worker learns at its next step
    assert await c.renew([d]) == {d.entry_id: RenewCode.CANCEL_REQUESTED}
    await c.write_endings([ConfirmCancel(d)])
    assert (await producer.get(job_id)).status is JobStatus.CANCELLED
    assert await event_types(redis, job_id) == ["queued", "started", "cancel_requested",
                                                "progress", "cancelled"]


async def test_zombie_write_is_fenced(redis: Redis, setup: tuple[Producer, QueueConsumer]
                                      ) -> None:
    producer, a = setup
    b = consumer(redis, "w2")
    job_id = await submit(producer)
    da = await read_one(a)
    await a.start([da])
    [db] = await b.reclaim(1, min_idle_ms=0)  # a looks dead: b takes the entry over
    [outcome] = await b.start([db])
    assert outcome.started and db.deliveries == 2
    with pytest.raises(NotOwner):
        await a.progress(da, {"stage": "late"})
    [late] = await a.write_endings([Complete.of(da, {"by": "zombie"})])
    assert isinstance(late, NotOwner)
    assert await a.renew([da]) == {da.entry_id: RenewCode.LOST}  # renewal never steals it back
    [ok] = await b.write_endings([Complete.of(db, {"by": "b"})])
    assert ok is None
    rec = await producer.get(job_id)
    assert rec.result == {"by": "b"} and rec.worker == "w2"
    assert await redis.hget(KEYS.stats, "fenced") == "2"  # progress + complete
    assert await redis.hget(KEYS.stats, "succeeded") == "1"


async def test_renewed_lease_is_not_reclaimed(
        redis: Redis, setup: tuple[Producer, QueueConsumer]) -> None:
    producer, a = setup
    b = consumer(redis, "w2")
    await submit(producer)
    d = await read_one(a)
    await a.start([d])
    idle = await redis.xpending_range(STREAM, GROUP, "-", "+", 1)
    await redis.execute_command("XCLAIM", STREAM, GROUP, "w1", 0, d.entry_id, "IDLE", 60_000,
                                "JUSTID")  # as if the job had run a minute
    assert await a.renew([d]) == {d.entry_id: RenewCode.RENEWED}
    assert await b.reclaim(1, min_idle_ms=30_000) == []
    after = await redis.xpending_range(STREAM, GROUP, "-", "+", 1)
    assert after[0]["times_delivered"] == idle[0]["times_delivered"] == 1


async def test_delivery_limit_dead_letters(redis: Redis) -> None:
    producer = Producer(redis, LIMITS)
    c = consumer(redis, "w1", max_deliveries=2)
    await c.ensure_groups()
    job_id, _ = await started(producer, c)
    [d2] = await c.reclaim(1, min_idle_ms=0)
    assert (await c.start([d2]))[0].started  # delivery 2: still allowed
    [d3] = await c.reclaim(1, min_idle_ms=0)
    [outcome] = await c.start([d3])
    assert not outcome.started and outcome.code == -3
    [(_, dead)] = await redis.xrange(KEYS.dead(JobKind.TRAINING))
    assert dead["job_id"] == job_id and dead["reason"] == "delivery_limit"
    rec = await producer.get(job_id)
    assert rec.status is JobStatus.FAILED and rec.error and rec.error.code == "delivery_limit"
    assert await redis.xlen(STREAM) == 0


async def test_malformed_entry_dead_lettered(redis: Redis,
                                             setup: tuple[Producer, QueueConsumer]) -> None:
    _, c = setup
    await redis.xadd(STREAM, {"hello": "world"})
    d = await read_one(c)
    assert d.message is None and "job_id" in d.parse_error
    other = consumer(redis, "w2")
    assert await other.dead_letter(d, d.parse_error) is False  # not its entry: nothing done
    assert await redis.xlen(KEYS.dead(JobKind.TRAINING)) == 0
    assert await c.dead_letter(d, d.parse_error) is True
    [(_, dead)] = await redis.xrange(KEYS.dead(JobKind.TRAINING))
    assert orjson.loads(dead["raw"]) == {"hello": "world"}
    assert await redis.xlen(STREAM) == 0


async def test_handback_requeues_at_once(redis: Redis,
                                         setup: tuple[Producer, QueueConsumer]) -> None:
    producer, c = setup
    job_id, d = await started(producer, c)
    [res] = await c.write_endings([Handback(d, "worker shutdown")])
    assert res is None
    rec = await producer.get(job_id)
    assert rec.status is JobStatus.QUEUED and rec.entry_id != d.entry_id
    d2 = await read_one(consumer(redis, "w2"))
    assert d2.job_id == job_id


async def test_entry_deleted_while_pending_is_skipped(
        redis: Redis, setup: tuple[Producer, QueueConsumer]) -> None:
    producer, c = setup
    await submit(producer)
    d = await read_one(c)
    await redis.xdel(STREAM, d.entry_id)
    assert await consumer(redis, "w2").reclaim(5, min_idle_ms=0) == []
    pending = await redis.xpending(STREAM, GROUP)
    assert pending["pending"] == 0


async def test_started_event_is_valid_json_whatever_the_consumer_name(redis: Redis) -> None:
    """The event is encoded by cjson, not pasted together: a quote or backslash in a worker's
    name used to make it invalid JSON, which SSE and the hub then dropped."""
    name = 'odd "host"\\1'
    c = consumer(redis, name)
    await c.ensure_groups()
    job_id, _ = await started(Producer(redis, LIMITS), c)
    events = await redis.xrange(KEYS.job_events(job_id))
    data = json.loads(next(f["data"] for _, f in events if f["type"] == "started"))
    assert data == {"worker": name, "attempt": 1, "deliveries": 1, "resumed": False}


async def test_a_job_whose_record_is_gone_leaves_no_trace_but_its_dead_letter(
        redis: Redis, setup: tuple[Producer, QueueConsumer]) -> None:
    """start dead-letters an entry whose record was deleted; the job's events expire and it
    leaves the jobs index (they stayed for ever, and listings tripped over the id)."""
    producer, c = setup
    job_id = await submit(producer)
    await redis.delete(KEYS.job(job_id))
    d = await read_one(c)
    [outcome] = await c.start([d])
    assert not outcome.started and outcome.code == -5
    assert await redis.xlen(KEYS.dead(JobKind.TRAINING)) == 1
    assert not await redis.exists(KEYS.job_events(job_id))  # none made at submit, none after
    assert await redis.zscore(KEYS.jobs, job_id) is None
