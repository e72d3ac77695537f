"""When the read loop takes back expired entries of dead workers: a sweep every ``every_s``
(the first at once), which goes on, batch after batch as slots free, until every pending list
of the type was read to its end; new entries are read between sweeps. A finished sweep also
removes from the group the consumers of workers that are gone and hold nothing, so the group
lists the workers that are alive."""

from __future__ import annotations

import time
from typing import Any

from streams.consumer import QueueConsumer, ReclaimSweep
from streams.delivery import Delivery


class Reclaimer:
    """``orphans_every_s``: also, that often, claim the entries of consumers whose heartbeat
    expired (``QueueConsumer.claim_orphans``), idle at least ``orphan_idle_ms``: a SIGKILLed
    worker's jobs restart one heartbeat TTL after its death, not one lease."""

    def __init__(self, queue: QueueConsumer, every_s: float, min_idle_ms: int,
                 block_ms: int = 5000, log: Any = None, orphans_every_s: float | None = None,
                 orphan_idle_ms: int = 0) -> None:
        self.queue, self.every_s, self.min_idle_ms, self.log = queue, every_s, min_idle_ms, log
        self.orphans_every_s, self.orphan_idle_ms = orphans_every_s, orphan_idle_ms
        self._orphans_at = 0.0  # monotonic: when the next orphan check is due
        self._orphans_due = False
        # Idle far longer than a live worker ever is: it reads at least every BLOCK_MS.
        self.gone_after_ms = max(3 * min_idle_ms, 2 * block_ms)
        self._sweep: ReclaimSweep | None = None  # the sweep under way
        self._next_at = 0.0  # monotonic

    def due(self) -> bool:
        """A sweep is under way, or one is due, or an orphan check is."""
        now = time.monotonic()
        if self._sweep is None and now >= self._next_at:
            self._sweep = self.queue.sweep()
            self._next_at = now + self.every_s
        if self.orphans_every_s is not None and now >= self._orphans_at:
            self._orphans_due = True
            self._orphans_at = now + self.orphans_every_s
        return self._sweep is not None or self._orphans_due

    def block_ms(self, max_ms: int) -> int:
        """Block for new entries no longer than until the next sweep or check is due."""
        until = self._next_at if self.orphans_every_s is None else min(self._next_at,
                                                                        self._orphans_at)
        return max(1, min(max_ms, int((until - time.monotonic()) * 1000)))

    async def next_batch(self, count: int) -> list[Delivery]:
        """Up to ``count`` entries of dead workers, claimed for this consumer: those whose
        heartbeat is gone when that check is due, else the expired ones of the sweep under way
        (``due()`` first)."""
        if self._orphans_due:
            self._orphans_due = False
            orphans = await self.queue.claim_orphans(count, self.orphan_idle_ms)
            if orphans or self._sweep is None:
                return orphans
        assert self._sweep is not None
        batch = await self.queue.reclaim(count, self.min_idle_ms, self._sweep)
        if self._sweep.done:
            self._sweep = None
            await self._forget_gone()
        return batch

    async def _forget_gone(self) -> None:
        gone = await self.queue.gone_consumers(self.gone_after_ms)
        if gone and await self.queue.forget(gone) and self.log is not None:
            self.log.info("removed the consumers of gone workers", consumers=gone)
