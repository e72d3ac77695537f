"""The stats hash counts every outcome per kind as well as per worker type, and
``streams.snapshot.read_numbers`` (the gateway's /metrics) reads queues, counters and live
workers in two round trips, whatever is queued."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from schemas.requests import InferenceRequest, TrainingRequest
from schemas.status import JobKind
from schemas.workers import WorkerInfo
from streams import registry
from streams.consumer import QueueConsumer
from streams.endings import Complete, ConfirmCancel, Fail, Handback, Retry
from streams.keys import QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer
from streams.snapshot import OUTCOMES, TypeNumbers, read_numbers

KEYS = QueueKeys("diagnostic")
LIMITS = StreamLimits(retention_s=60)


def by_type(rows: list[TypeNumbers], worker_type: str = "diagnostic") -> TypeNumbers:
    return next(r for r in rows if r.worker_type == worker_type)


async def test_an_empty_redis_reads_as_zeros_for_every_catalogue_type(redis: Redis) -> None:
    rows = await read_numbers(redis)
    assert [r.worker_type for r in rows][:2] == ["pytorch-2.0", "pytorch-2.0-gpu"]
    assert len(rows) == 7
    for row in rows:
        assert (row.delayed, row.workers, row.fenced) == (0, 0, 0)
        assert [s.kind for s in row.streams] == ["training", "inference", "command"]
        for s in row.streams:
            assert (s.length, s.pending, s.oldest_pending_age_s, s.owner_idle_s,
                    s.dead_letters) == (0, 0, None, None, 0)
            assert set(s.counters) == {*OUTCOMES, "submitted"}
            assert not any(s.counters.values())


async def test_counters_are_kept_per_kind(redis: Redis) -> None:
    """Each transition counts its outcome under ``<kind>:<outcome>`` too; the per-type
    counters (``succeeded``, …) stay as they were."""
    producer = Producer(redis, LIMITS)
    c = QueueConsumer(redis, KEYS, "w1", LIMITS, max_deliveries=1)
    await c.ensure_groups()
    train = [(await producer.submit_training(TrainingRequest(model_type="noop"))).job_id
             for _ in range(6)]
    await producer.cancel(train[5])  # queued: cancelled at once
    got = await c.read(c.redis, 5, 100)
    assert [d.job_id for d in got] == train[:5]
    await c.start(got)
    results = await c.write_endings([
        Complete.of(got[0], {}), Fail.of(got[1], {"code": "x", "message": "x"}),
        Retry.of(got[2], {"code": "y", "message": "y", "retryable": True}, 60_000),
        Handback(got[3], "stop")])
    assert results == [None] * 4
    assert await producer.cancel(got[4].job_id) is not None
    await c.write_endings([ConfirmCancel(got[4])])
    infer = await producer.submit_inference(InferenceRequest(model_id=train[0], inputs=[[1.0]]))
    fresh = {d.job_id: d for d in await c.read(c.redis, 2, 100)}  # handed back + inference
    assert set(fresh) == {train[3], infer.job_id}
    d_inf = fresh[infer.job_id]
    [d2] = await c.reclaim(1, min_idle_ms=0)  # a second delivery of the handed-back job
    assert d2.job_id == train[3]
    [outcome] = await c.start([d2])  # past MAX_DELIVERIES=1: dead-lettered, failed
    assert outcome.code == -3
    await c.start([d_inf])
    await c.write_endings([Complete.of(d_inf, {})])

    stats = await redis.hgetall(KEYS.stats)
    assert stats["training:submitted"] == "6" and stats["inference:submitted"] == "1"
    assert stats["submitted"] == "7"
    assert stats["training:succeeded"] == "1" and stats["inference:succeeded"] == "1"
    assert stats["succeeded"] == "2"
    assert stats["training:failed"] == "2"  # Fail + the delivery limit
    assert stats["training:cancelled"] == "2"  # queued + confirmed
    assert stats["training:retried"] == "1" and stats["training:handed_back"] == "1"
    assert stats["training:dead_lettered"] == "1"

    row = by_type(await read_numbers(redis))
    training, inference, _command = row.streams
    assert training.counters == {"succeeded": 1, "failed": 2, "cancelled": 2, "retried": 1,
                                 "dead_lettered": 1, "handed_back": 1, "submitted": 6}
    assert inference.counters == {"succeeded": 1, "failed": 0, "cancelled": 0, "retried": 0,
                                  "dead_lettered": 0, "handed_back": 0, "submitted": 1}
    assert row.delayed == 1  # the retry waits out its minute
    assert training.dead_letters == 1 and inference.dead_letters == 0
    assert training.length == 0 and training.pending == 0


async def test_malformed_entries_count_as_dead_lettered_of_their_kind(redis: Redis) -> None:
    c = QueueConsumer(redis, KEYS, "w1", LIMITS, 5)
    await c.ensure_groups()
    await redis.xadd(KEYS.stream(JobKind.INFERENCE), {"hello": "world"})
    [d] = await c.read(c.redis, 1, 100)
    assert await c.dead_letter(d, d.parse_error)
    stats = await redis.hgetall(KEYS.stats)
    assert stats["inference:dead_lettered"] == "1" and "training:dead_lettered" not in stats


async def test_queue_numbers_and_live_workers(redis: Redis) -> None:
    producer = Producer(redis, LIMITS)
    c = QueueConsumer(redis, KEYS, "w1", LIMITS, 5)
    await c.ensure_groups()
    for _ in range(5):
        await producer.submit_training(TrainingRequest(model_type="noop"))
    await c.read(c.redis, 2, 100)  # 2 pending, 3 waiting
    info = dict(worker_type="diagnostic", framework="diagnostic", framework_version="0",
                hostname="h", pid=1, started_at=0, heartbeat_at=0, max_concurrent_jobs=2)
    await registry.heartbeat(redis, KEYS, WorkerInfo(worker_id="alive", **info), ttl_s=30)
    await registry.heartbeat(redis, KEYS, WorkerInfo(worker_id="dead", **info), ttl_s=30)
    await redis.delete(KEYS.worker("dead"))  # its heartbeat expired; the set still names it

    rows = await read_numbers(redis)
    row = by_type(rows)
    training = row.streams[0]
    assert (training.length, training.pending) == (5, 2)
    assert training.oldest_pending_age_s is not None and 0 <= training.oldest_pending_age_s < 30
    assert training.owner_idle_s is not None and 0 <= training.owner_idle_s < 30
    assert row.streams[1].owner_idle_s is None  # nothing pending there
    assert row.workers == 1
    assert all(r.workers == 0 for r in rows if r.worker_type != "diagnostic")


async def test_the_same_commands_whatever_is_queued(redis: Redis) -> None:
    """The read's cost does not grow with the queue: the same commands for 1 job or 2,000,
    and no command that reads an entry or a record."""
    producer = Producer(redis, LIMITS)

    async def commands_of_one_read() -> dict[str, int]:
        await redis.config_resetstat()
        await read_numbers(redis)
        stats = await redis.info("commandstats")
        return {name: int(v["calls"]) for name, v in stats.items()
                if not name.startswith(("cmdstat_config", "cmdstat_info"))}

    await producer.submit_training(TrainingRequest(model_type="noop"))
    small = await commands_of_one_read()
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(2_000):
            pipe.xadd(KEYS.stream(JobKind.TRAINING), {"job_id": f"x{i}"})
        await pipe.execute()
    large = await commands_of_one_read()
    assert small == large
    assert set(large) <= {"cmdstat_time", "cmdstat_eval",  # TIME, in a keyless script
                          "cmdstat_xlen", "cmdstat_xpending", "cmdstat_zcard",
                          "cmdstat_hgetall", "cmdstat_smembers", "cmdstat_exists",
                          "cmdstat_xinfo", "cmdstat_xinfo|consumers"}
    assert large["cmdstat_xlen"] == 7 * 9  # per type: 3 kinds x 2 lanes + 3 dead-letter streams


@pytest.mark.parametrize("worker_types", [["diagnostic"], [f"t{i}" for i in range(100)]])
async def test_any_worker_types_can_be_asked_for(redis: Redis, worker_types: list[str]) -> None:
    rows = await read_numbers(redis, worker_types=worker_types)
    assert [r.worker_type for r in rows] == worker_types


async def test_owner_idle_grows_while_a_holder_is_silent_and_renewal_resets_it(
        redis: Redis) -> None:
    """What the 'lease expired, not reclaimed' alert reads: the silence of the consumer holding
    pending entries. A lease renewal (XCLAIM JUSTID, as renew.lua does) is a sign of life."""
    producer = Producer(redis, LIMITS)
    ghost = QueueConsumer(redis, KEYS, "ghost", LIMITS, 5)
    await ghost.ensure_groups()
    await producer.submit_training(TrainingRequest(model_type="noop"))
    [d] = await ghost.read(ghost.redis, 1, 100)
    await asyncio.sleep(0.3)  # time passes: the silence measured
    silent = by_type(await read_numbers(redis)).streams[0].owner_idle_s
    assert silent is not None and silent >= 0.25
    await ghost.renew([d])
    renewed = by_type(await read_numbers(redis)).streams[0].owner_idle_s
    assert renewed is not None and renewed < 0.25
