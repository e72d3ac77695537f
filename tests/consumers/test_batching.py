"""Batching of short jobs' Redis work: final writes gather the endings due within GATHER_S into
one round trip (and go out at once when nothing else is about to end), and while jobs read
ahead still wait for a thread the worker refills in batches of half the read-ahead."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio import Redis

from consumers.execution import Outcome
from consumers.final_writes import GATHER_S, FinalWrites
from consumers.frameworks import load_framework
from consumers.progress import JobRun
from consumers.runtime import Worker
from schemas.requests import TrainingRequest
from schemas.status import JobStatus
from streams.consumer import QueueConsumer
from streams.delivery import Delivery
from streams.endings import Complete, Ending
from streams.errors import AiqError
from streams.keys import QueueKeys
from streams.limits import StreamLimits
from streams.producer import Producer
from tests.support import eventually, settings_for

KEYS = QueueKeys("diagnostic")
LIMITS = StreamLimits(retention_s=60)


class CountingConsumer(QueueConsumer):
    """The real consumer, recording how many endings each final write carried."""

    writes: list[int]

    async def write_endings(self, endings: list[Ending]) -> list[AiqError | None]:
        self.writes.append(len(endings))
        return await super().write_endings(endings)


async def started(redis: Redis, n: int) -> tuple[CountingConsumer, list[Delivery]]:
    producer = Producer(redis, LIMITS)
    for _ in range(n):
        await producer.submit_training(TrainingRequest(model_type="noop"))  # type: ignore[call-arg]
    queue = CountingConsumer(redis, KEYS, "w", LIMITS)
    queue.writes = []
    await queue.ensure_groups()
    batch = await queue.read(redis, n, 100)
    assert len(batch) == n
    assert all(o.started for o in await queue.start(batch))
    return queue, batch


def final_writes(queue: QueueConsumer, batch: list[Delivery], gather: int
                 ) -> tuple[FinalWrites, dict[str, JobRun], asyncio.Event]:
    loop = asyncio.get_running_loop()
    runs = {d.entry_id: JobRun(d, loop, _never, 0.0) for d in batch}
    written = asyncio.Event()
    writes = FinalWrites(queue, runs, structlog.get_logger("test"), written.set,
                         lambda: gather)
    return writes, runs, written


async def _never(_d: Delivery, _data: dict[str, Any]) -> bool:
    raise AssertionError("no progress in these tests")


async def test_a_final_write_gathers_the_endings_due_and_writes_them_in_one_round_trip(
        redis: Redis) -> None:
    queue, batch = await started(redis, 7)
    writes, runs, _ = final_writes(queue, batch, gather=3)
    task = asyncio.create_task(writes.loop())
    try:
        writes.add(Complete.of(batch[0], {"n": 0}), Outcome("succeeded"))
        await asyncio.sleep(0)  # the write loop wakes: 1 of the 3 it waits for
        await asyncio.sleep(0)
        writes.add(Complete.of(batch[1], {"n": 1}), Outcome("succeeded"))
        writes.add(Complete.of(batch[2], {"n": 2}), Outcome("succeeded"))
        await eventually(lambda: _left(runs, 4), what="the three gathered endings written")
        assert queue.writes == [3]
        # Fewer than it waits for: written all the same once GATHER_S has passed.
        writes.add(Complete.of(batch[3], {"n": 3}), Outcome("succeeded"))
        await eventually(lambda: _left(runs, 3), what="a lone ending written after GATHER_S")
        assert queue.writes == [3, 1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    producer = Producer(redis, LIMITS)
    records = [await producer.get(d.job_id) for d in batch]
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 4 + [JobStatus.RUNNING] * 3
    assert [r.result for r in records[:4]] == [{"n": n} for n in range(4)]


async def test_a_final_write_goes_out_at_once_when_nothing_else_is_due(redis: Redis) -> None:
    queue, batch = await started(redis, 2)
    writes, runs, written = final_writes(queue, batch, gather=1)
    task = asyncio.create_task(writes.loop())
    try:
        writes.add(Complete.of(batch[0], {}), Outcome("succeeded"))
        await asyncio.wait_for(written.wait(), 10)
        assert queue.writes == [1] and batch[0].entry_id not in runs
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _left(runs: dict[str, JobRun], n: int) -> bool:
    return len(runs) == n


def worker(redis_url: str, tmp_path: Path, **overrides: Any) -> Worker:
    settings = settings_for(redis_url, tmp_path, **overrides)
    redis = Redis.from_url(redis_url)  # never connected: these tests read the worker's state
    return Worker(settings, load_framework("diagnostic"), redis, redis)


def test_endings_are_gathered_only_while_several_are_due(redis_url: str, tmp_path: Path
                                                         ) -> None:
    w = worker(redis_url, tmp_path, max_concurrent_jobs=16)
    assert w._endings_soon() == 1  # no job has run yet
    w._run_s, w.executing = GATHER_S / 2, 16  # 16 running, each ends within GATHER_S / 2
    assert w._endings_soon() == 1 + 8  # at most half the slots are waited for
    w.executing = 1  # the last one in the threads: nothing else is due
    assert w._endings_soon() == 1
    w.executing = 0  # an idle worker's ending is written at once
    assert w._endings_soon() == 1
    w._run_s, w.executing = 10.0, 16  # long jobs: none due within GATHER_S
    assert w._endings_soon() == 1


def test_refills_wait_for_half_the_read_ahead_while_jobs_wait_for_a_thread(
        redis_url: str, tmp_path: Path) -> None:
    w = worker(redis_url, tmp_path, max_concurrent_jobs=8, read_ahead_s=0.05)
    assert w.read_ahead == 0 and w._refill_at == 1  # no run time known: no read-ahead
    w._run_s = 0.001  # short jobs: 8 slots free within 50 ms many times over
    assert w.read_ahead == 8
    w.executing = 8 + 6  # 8 running, 6 read ahead wait for a thread: room for 2
    assert w.capacity == 2 and w._refill_at == 4  # not yet: the 6 keep the threads busy
    w.executing = 8 + 4
    assert w.capacity == 4 == w._refill_at  # half the read-ahead free: refill
    w.executing = 8  # none waits: any free room is taken at once
    assert w._refill_at == 1
    w._run_s = 1.0  # long jobs: no read-ahead, refill one entry at a time
    w.executing = 7
    assert w.read_ahead == 0 and w._refill_at == 1 and w.capacity == 1
