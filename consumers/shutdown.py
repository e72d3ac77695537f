"""The graceful stop's steps (SIGTERM): stop reading without dropping a start in flight, then,
after the drain, hand back what did not finish within the grace period and entries delivered
to this worker but never started (``handback.lua``: queued again for another worker, not
counted as an attempt)."""

from __future__ import annotations

import asyncio
from typing import Any

from consumers.ending import SHUTDOWN
from consumers.loops import unless_unavailable
from consumers.progress import JobRun
from streams.consumer import QueueConsumer
from streams.delivery import Delivery
from streams.endings import Ending, Handback
from streams.keys import GROUP


async def stop_reading(reading: asyncio.Task[None], idle_wait: bool) -> None:
    """A read blocked for new entries or a free slot (``idle_wait``) stops at once; a start
    in flight lands first and launches its jobs, which then run within the grace period
    instead of being handed back unstarted."""
    if idle_wait:
        reading.cancel()
    _, pending = await asyncio.wait({reading}, timeout=10)
    for task in pending:  # Redis down, backing off: what it read is handed back
        task.cancel()


async def hand_back(queue: QueueConsumer, runs: dict[str, JobRun], log: Any) -> None:
    """Every job still in ``runs`` (each told to stop at its next step), then the unseen."""
    unfinished = list(runs.values())
    for run in unfinished:
        run.interrupted = True
        runs.pop(run.delivery.entry_id, None)
    endings: list[Ending] = [Handback(r.delivery, SHUTDOWN) for r in unfinished]
    if endings:
        with unless_unavailable(log, "hand back"):
            await queue.write_endings(endings)
            log.info("handed back", jobs=[r.delivery.job_id for r in unfinished])
    with unless_unavailable(log, "hand back unseen"):
        await _hand_back_unseen(queue, runs)
        await queue.forget([queue.name])  # nothing held now: the group lists live workers


async def _hand_back_unseen(queue: QueueConsumer, runs: dict[str, JobRun]) -> None:
    """Entries delivered to this consumer but never started (e.g. a read cut short)."""
    redis, keys = queue.redis, queue.keys
    for stream in queue.streams:
        pending = await redis.xpending_range(stream, GROUP, "-", "+", 1000,
                                             consumername=queue.name)
        for entry_id in (p["message_id"] for p in pending if p["message_id"] not in runs):
            got = await redis.xrange(stream, entry_id, entry_id)
            d = Delivery(stream, keys.kind_of_stream(stream), entry_id, got[0][1] if got else {})
            await queue.write_endings([Handback(d, SHUTDOWN)])
