"""The batched transitions (start, renew, complete, fail) with real batches: several entries at
once, mixing ones the caller owns with fenced ones (another consumer's), duplicates and missing
ones (acked and deleted). A batch of one hid a renewal bug that re-ran every long job."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.consumer import QueueConsumer
from streams.delivery import Delivery
from streams.endings import Complete, ConfirmCancel, Fail, Handback, Retry
from streams.errors import JobNotFound, NotOwner
from streams.keys import GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)
LIMITS = StreamLimits(retention_s=60)
LONG_IDLE_MS = 60_000


@pytest.fixture
async def producer(redis: Redis) -> Producer:
    return Producer(redis, LIMITS)


async def consumers(redis: Redis, *names: str) -> list[QueueConsumer]:
    out = [QueueConsumer(redis, KEYS, name, LIMITS) for name in names]
    await out[0].ensure_groups()
    return out


async def submit(producer: Producer, n: int) -> list[str]:
    req = TrainingRequest(model_type="noop")  # type: ignore[call-arg]
    return [(await producer.submit_training(req)).job_id for _ in range(n)]


async def read(c: QueueConsumer, n: int) -> list[Delivery]:
    got = await c.read(c.redis, n, 100)
    assert len(got) == n
    return got


async def idle_ms(redis: Redis) -> dict[str, tuple[str, int]]:
    """entry id -> (consumer, idle ms), from XPENDING's extended form."""
    rows = await redis.xpending_range(STREAM, GROUP, "-", "+", 1000)
    return {r["message_id"]: (r["consumer"], r["time_since_delivered"]) for r in rows}


async def age(redis: Redis, consumer: str, entries: list[Delivery]) -> None:
    """Make the entries look as if they had run a minute (idle 60 s), keeping their owner."""
    await redis.execute_command("XCLAIM", STREAM, GROUP, consumer, 0,
                                *(d.entry_id for d in entries), "IDLE", LONG_IDLE_MS, "JUSTID")


async def test_renew_resets_the_idle_time_of_every_owned_entry(
        redis: Redis, producer: Producer) -> None:
    a, b = await consumers(redis, "a", "b")
    await submit(producer, 6)
    mine = await read(a, 4)
    await a.start(mine)
    theirs = await read(b, 2)
    await b.start(theirs)
    gone = mine[3]
    [res] = await a.write_endings([Complete.of(gone, {})])  # acked and deleted: missing
    assert res is None
    await age(redis, "a", mine[:3])
    await age(redis, "b", theirs)

    batch = [*mine, theirs[0], mine[0], mine[1]]  # owned x3, missing, fenced, duplicates
    codes = await a.renew(batch)

    assert codes == {mine[0].entry_id: 0, mine[1].entry_id: 0, mine[2].entry_id: 0,
                     gone.entry_id: 1, theirs[0].entry_id: 1}
    idle = await idle_ms(redis)
    for d in mine[:3]:
        assert idle[d.entry_id][0] == "a" and idle[d.entry_id][1] < LONG_IDLE_MS / 2
    for d in theirs:  # never stolen back, and still as old as they were
        assert idle[d.entry_id][0] == "b" and idle[d.entry_id][1] >= LONG_IDLE_MS
    assert gone.entry_id not in idle
    rows = await redis.xpending_range(STREAM, GROUP, "-", "+", 1000)
    assert all(r["times_delivered"] == 1 for r in rows)  # JUSTID: no delivery counted


async def test_renewed_entries_are_not_reclaimed_while_fenced_ones_are(
        redis: Redis, producer: Producer) -> None:
    a, b, c = await consumers(redis, "a", "b", "c")
    await submit(producer, 5)
    mine = await read(a, 3)
    theirs = await read(b, 2)
    await age(redis, "a", mine)
    await age(redis, "b", theirs)
    await a.renew([*mine, *theirs])
    reclaimed = await c.reclaim(10, min_idle_ms=LONG_IDLE_MS // 2)
    assert sorted(d.entry_id for d in reclaimed) == sorted(d.entry_id for d in theirs)


async def test_renew_reports_cancel_requests_per_entry(
        redis: Redis, producer: Producer) -> None:
    [a] = await consumers(redis, "a")
    job_ids = await submit(producer, 3)
    batch = await read(a, 3)
    await a.start(batch)
    assert await producer.cancel(job_ids[1]) is JobStatus.RUNNING
    codes = await a.renew(batch)
    assert [codes[d.entry_id] for d in batch] == [0, 2, 0]


async def test_start_mixed_batch(redis: Redis, producer: Producer) -> None:
    a, b = await consumers(redis, "a", "b")
    job_ids = await submit(producer, 5)
    mine = await read(a, 4)
    [theirs] = await read(b, 1)
    await redis.xack(STREAM, GROUP, mine[3].entry_id)  # missing from a's pending list
    batch = [mine[0], theirs, mine[1], mine[0], mine[3], mine[2]]

    outcomes = await a.start(batch)

    assert [o.code for o in outcomes] == [0, -1, 0, -1, -1, 0]
    assert [o.started for o in outcomes] == [True, False, True, False, False, True]
    for jid in (job_ids[0], job_ids[1], job_ids[2]):
        rec = await producer.get(jid)
        assert rec.status is JobStatus.RUNNING and rec.worker == "a"
    assert (await producer.get(theirs.job_id)).status is JobStatus.QUEUED
    started = [f for _, f in await redis.xrange(KEYS.events) if f["type"] == "started"]
    assert len(started) == 3  # the duplicate started nothing twice
    assert await redis.hget(KEYS.stats, "fenced") == "3"


@pytest.mark.parametrize("action", ["complete", "fail"])
async def test_finish_mixed_batch(redis: Redis, producer: Producer, action: str) -> None:
    a, b = await consumers(redis, "a", "b")
    await submit(producer, 5)
    mine = await read(a, 4)
    [theirs] = await read(b, 1)
    await a.start(mine)
    await b.start([theirs])
    [done] = await a.write_endings([Complete.of(mine[3], {"first": True})])  # then missing
    assert done is None

    def call(c: QueueConsumer, d: Delivery) -> object:
        if action == "complete":
            return Complete.of(d, {"n": d.entry_id})
        return Fail.of(d, {"code": "x", "message": d.entry_id})

    batch = [mine[0], theirs, mine[1], mine[0], mine[3], mine[2]]
    results = await a.write_endings([call(a, d) for d in batch])  # type: ignore[misc]

    assert [r is None for r in results] == [True, False, True, False, False, True]
    assert all(isinstance(r, NotOwner) for r in results if r is not None)
    status = JobStatus.SUCCEEDED if action == "complete" else JobStatus.FAILED
    for d in mine[:3]:
        rec = await producer.get(d.job_id)
        assert rec.status is status
        assert (rec.result or {}).get("n", d.entry_id) == d.entry_id
    assert (await producer.get(mine[3].job_id)).result == {"first": True}  # not overwritten
    assert (await producer.get(theirs.job_id)).status is JobStatus.RUNNING
    assert await redis.xlen(STREAM) == 1  # only b's entry is left
    stats = await redis.hgetall(KEYS.stats)
    assert int(stats[status.value]) == 3 + (action == "complete")
    assert stats["fenced"] == "3"
    terminal = [f for _, f in await redis.xrange(KEYS.events) if f["type"] == status.value]
    assert len(terminal) == 3 + (action == "complete")


async def test_no_transition_writes_a_record_that_is_gone(redis: Redis,
                                                         producer: Producer) -> None:
    """A job's record deleted while it runs: complete and fail (in a batch with owned and fenced
    entries), retry, handback, confirm_cancel and progress write no partial record (they used
    to, which then broke every listing); the gone job's entry leaves the stream."""
    a, b = await consumers(redis, "a", "b")
    job_ids = await submit(producer, 7)
    mine, theirs = await read(a, 6), await read(b, 1)
    await a.start(mine)
    await b.start(theirs)
    gone = [mine[1], mine[3], mine[4], mine[5]]
    for d in gone:
        await redis.delete(KEYS.job(d.job_id))

    results = await a.write_endings([
        Complete.of(mine[0], {"ok": 1}), Complete.of(mine[1], {"ok": 2}),
        Complete.of(theirs[0], {"ok": 3}), Fail.of(mine[2], {"code": "x", "message": "y"}),
        Retry.of(mine[3], {"code": "z", "message": "z"}, 0), Handback(mine[4], "stop"),
        ConfirmCancel(mine[5])])
    assert [type(r).__name__ if r else None for r in results] == [
        None, "JobNotFound", "NotOwner", None, "JobNotFound", "JobNotFound", "JobNotFound"]
    for d in gone:
        assert not await redis.exists(KEYS.job(d.job_id)), d  # no partial record
    left = {e for e, _ in await redis.xrange(STREAM)}
    assert left == {theirs[0].entry_id}  # the gone jobs' entries left the stream, too
    assert (await producer.get(job_ids[0])).status is JobStatus.SUCCEEDED
    assert (await producer.get(job_ids[2])).status is JobStatus.FAILED

    await redis.delete(KEYS.job(theirs[0].job_id))
    with pytest.raises(JobNotFound):
        await b.progress(theirs[0], {"stage": "x"})
    assert not await redis.exists(KEYS.job(theirs[0].job_id))


async def test_listing_skips_an_unreadable_record(redis: Redis, producer: Producer) -> None:
    job_ids = await submit(producer, 3)
    await redis.hdel(KEYS.job(job_ids[1]), "kind", "status")  # a partial record
    listed = [r.job_id for r in await producer.list()]
    assert sorted(listed) == sorted([job_ids[0], job_ids[2]])
    with pytest.raises(JobNotFound, match="incomplete"):
        await producer.get(job_ids[1])


async def test_one_malformed_record_is_dead_lettered_and_the_batch_flows(
        redis: Redis, producer: Producer) -> None:
    """A hand-edited record with a non-numeric attempt made start throw for the whole batch,
    which was retried and dropped until a lease passed."""
    (a,) = await consumers(redis, "a")
    job_ids = await submit(producer, 3)
    await redis.hset(KEYS.job(job_ids[1]), "attempt", "two")
    batch = await read(a, 3)
    outcomes = await a.start(batch)
    assert [o.started for o in outcomes] == [True, False, True]
    assert outcomes[1].code == -3
    [(_, dead)] = await redis.xrange(KEYS.dead(JobKind.TRAINING))
    assert dead["reason"] == "record_malformed" and dead["job_id"] == job_ids[1]
    rec = await producer.get(job_ids[1])
    assert rec.status is JobStatus.FAILED and rec.error and rec.error.code == "record_malformed"


async def test_a_filtered_listing_reads_a_bounded_number_of_records(
        redis: Redis, producer: Producer) -> None:
    """GET /jobs?status=X read up to 20 x limit records per worker type (70,000 for limit 500):
    a listing now reads the ``scan`` newest jobs at most, whatever the filter."""
    job_ids = await submit(producer, 12)
    await redis.hset(KEYS.job(job_ids[0]), "status", "failed")  # the oldest
    await redis.hset(KEYS.job(job_ids[-1]), "status", "failed")  # the newest
    await redis.config_resetstat()
    found = await producer.list(JobStatus.FAILED, limit=10, scan=5)
    assert [r.job_id for r in found] == [job_ids[-1]]  # the oldest is beyond the scan
    stats = await redis.info("commandstats")
    assert stats["cmdstat_hgetall"]["calls"] <= 5
    assert len(await producer.list(JobStatus.FAILED, limit=10, scan=50)) == 2
