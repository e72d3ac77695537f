"""submit.lua with real batches: new jobs mixed with duplicates of earlier jobs, duplicates
inside the batch, a retry of the very same call, and conflicts, several at once; its check
mode; and the producer's batch across several worker types (hash slots)."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobKind
from streams import scripts
from streams.errors import IDEMPOTENCY_CONFLICT, QUEUE_FULL, IdempotencyConflict, QueueFull
from streams.events import QUEUED_EVENT_ID, replay
from streams.keys import GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer, new_job_id
from streams.submission import CHECK, NO_ROOM_CHECK, WRITE, outcomes, script_call, training_job

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)
LIMITS = StreamLimits(retention_s=60, max_queued=10)


def noop(**hp: object) -> TrainingRequest:
    return TrainingRequest.model_validate({"model_type": "noop", "hyperparameters": hp})


def jobs(*specs: tuple[str | None, int]) -> list:
    """One job per (idempotency key, seed)."""
    return [training_job(noop(seed=seed), "diagnostic", new_job_id(), key)
            for key, seed in specs]


async def call(redis: Redis, batch: list, mode: str = WRITE, max_queued: int = 10) -> list:
    keys, args = script_call(KEYS, LIMITS, batch, mode, max_queued)
    return list(await scripts.SUBMIT(redis, keys, args))


async def footprint(redis: Redis) -> tuple[int, int, int]:
    return (await redis.xlen(STREAM), await redis.zcard(KEYS.jobs), await redis.dbsize())


async def test_new_duplicate_in_batch_earlier_and_retried_jobs_at_once(redis: Redis) -> None:
    earlier = jobs(("a", 1), ("b", 2))
    assert [o.duplicate for o in outcomes(await call(redis, earlier))] == [False, False]
    batch = jobs(("a", 1), (None, 3), ("c", 4), ("c", 4), ("b", 2), (None, 5), ("d", 6))
    got = outcomes(await call(redis, batch))
    assert [o.duplicate for o in got] == [True, False, False, True, True, False, False]
    assert [o.job_id for o in got] == [earlier[0].job_id, batch[1].job_id, batch[2].job_id,
                                       batch[2].job_id, earlier[1].job_id, batch[5].job_id,
                                       batch[6].job_id]
    assert all(o.event_id for o, j in zip(got, batch, strict=True) if not o.duplicate)
    assert await redis.xlen(STREAM) == 6
    assert await redis.hget(KEYS.stats, "submitted") == "6"
    # The client resends the very same call (a lost reply): every job is itself, again.
    before = await footprint(redis)
    again = outcomes(await call(redis, batch))
    assert [o.job_id for o in again] == [o.job_id for o in got]
    assert all(o.duplicate for o in again)
    assert await footprint(redis) == before
    assert await redis.hget(KEYS.stats, "submitted") == "6"


async def test_one_conflict_anywhere_refuses_the_whole_call(redis: Redis) -> None:
    await call(redis, jobs(("a", 1)))
    before = await footprint(redis)
    for batch, at in ((jobs((None, 1), ("n", 2), ("a", 9)), 3),  # with an earlier key
                      (jobs(("x", 1), ("a", 1), ("x", 2)), 3),  # twice in the batch
                      (jobs(("a", 2), ("y", 1)), 1)):
        reply = await call(redis, batch)
        assert reply[:2] == [IDEMPOTENCY_CONFLICT, at]
        assert await footprint(redis) == before
        assert not await redis.exists(KEYS.idempotency("n"), KEYS.idempotency("x"))


async def test_check_mode_answers_what_write_would_and_writes_nothing(redis: Redis) -> None:
    await call(redis, jobs(("a", 1)))
    before = await footprint(redis)
    batch = jobs(("a", 1), (None, 2), ("b", 3))
    checked = await call(redis, batch, CHECK)
    assert checked[0] == 0
    assert [o.duplicate for o in outcomes(checked)] == [True, False, False]
    assert [o.event_id for o in outcomes(checked)] == ["", "", ""]
    assert await footprint(redis) == before
    assert (await call(redis, jobs(("a", 2)), CHECK))[0] == IDEMPOTENCY_CONFLICT
    assert (await call(redis, jobs(*[(None, i) for i in range(10)]), CHECK))[:3] == \
        [QUEUE_FULL, 1, 10]
    assert await footprint(redis) == before


async def test_room_is_checked_for_the_new_jobs_only_unless_admitted(redis: Redis) -> None:
    await call(redis, jobs(*[(f"k{i}", i) for i in range(8)]))
    before = await footprint(redis)
    assert (await call(redis, jobs((None, 1), (None, 2), (None, 3))))[:3] == [QUEUE_FULL, 8, 3]
    assert await footprint(redis) == before
    fits = outcomes(await call(redis, jobs(("k0", 0), ("k1", 1), (None, 1), (None, 2))))
    assert [o.duplicate for o in fits] == [True, True, False, False]
    assert await redis.xlen(STREAM) == 10
    # The write pass of a batch its check pass admitted does not check room again.
    admitted = await call(redis, jobs((None, 5)), WRITE, NO_ROOM_CHECK)
    assert admitted[0] == 0 and await redis.xlen(STREAM) == 11


async def test_queued_events_count_positions_across_the_batch(redis: Redis) -> None:
    """Each new job's position (the undelivered entries, itself included) is in its queued
    event (the type's feed only, id 0-1) and in its record; no job stream is made. A second call
    mixes a duplicate with new jobs, after one job was delivered (pending: not counted)."""
    first = jobs(("a", 0), (None, 1), (None, 2))
    got = outcomes(await call(redis, first))
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await redis.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=1)  # job 1 is delivered
    second = jobs((None, 3), ("a", 0), (None, 4))
    got += outcomes(await call(redis, second))
    new = [o for o in got if not o.duplicate]
    assert [o.job_id for o in new] == [j.job_id for j in (*first, second[0], second[2])]
    assert {o.event_id for o in new} == {QUEUED_EVENT_ID}
    positions = {f["job_id"]: orjson.loads(f["data"]) for _, f in await redis.xrange(KEYS.events)}
    expected = [1, 2, 3, 3, 4]  # the delivered first job no longer counts
    assert [positions[o.job_id] for o in new] == [
        {"position": p, "worker_type": "diagnostic"} for p in expected]
    for o, p in zip(new, expected, strict=True):
        assert await redis.hget(KEYS.job(o.job_id), "position") == str(p)
        assert not await redis.exists(KEYS.job_events(o.job_id))
        [(event_id, fields)] = (await replay(redis, KEYS, o.job_id)).entries
        assert event_id == QUEUED_EVENT_ID and fields["type"] == "queued"
        assert orjson.loads(fields["data"]) == {"position": p, "worker_type": "diagnostic"}
    # Empty values are left out of the record (no data_path, gpu_mem_mb, timeout_s here).
    record = await redis.hgetall(KEYS.job(new[0].job_id))
    assert "" not in record.values() and "data_path" not in record


async def test_producer_batch_over_several_types_refuses_all_when_one_slot_refuses(
        redis: Redis) -> None:
    producer = Producer(redis, StreamLimits(max_queued=2))
    forest = TrainingRequest(model_type="random_forest", data_path="builtin:digits")
    await producer.submit_training_batch([(noop(), None), (noop(), None)])
    before = await redis.dbsize()
    with pytest.raises(QueueFull):
        await producer.submit_training_batch([(forest, None), (noop(), None)])
    with pytest.raises(IdempotencyConflict) as refused:
        await producer.submit_training_batch([(forest, "k"), (forest.model_copy(
            update={"description": "other"}), "k")])
    assert refused.value.items == (1,)
    assert await redis.dbsize() == before
    done = await producer.submit_training_batch([(forest, "k"), (forest, None), (forest, "k")])
    assert [d.duplicate for d in done] == [False, False, True]
    assert {d.worker_type for d in done} == {"sklearn"}
    with pytest.raises(ValueError, match="1 to 1000 jobs"):
        await producer.submit_training_batch([])
