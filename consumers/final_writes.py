"""The final writes of ended jobs: queued as jobs end, written together. Whatever ended while
one write was in flight goes out in the next, in one round trip (``write_endings``). Under a
load of short jobs, a write first waits up to ``GATHER_S`` for the endings the worker expects
within that time (``gather``), so one round trip carries several; a worker with nothing else
about to end writes at once."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from consumers.execution import Outcome
from consumers.loops import Backoff, forever
from consumers.progress import JobRun
from streams.consumer import QueueConsumer
from streams.endings import Ending
from streams.errors import UNAVAILABLE, NotOwner

GATHER_S = 0.002  # the longest a final write waits for more endings (only while they are due)


class FinalWrites:
    """``runs``: the worker's jobs in flight; a job leaves it once its final write is done
    (its entry stays leased, and renewed, until then). ``written`` is called after each
    write: fewer entries are held, so there is room to read more. ``gather`` says how many
    endings the next write should carry (1: write at once), called when one is added."""

    def __init__(self, queue: QueueConsumer, runs: dict[str, JobRun], log: Any,
                 written: Callable[[], None], gather: Callable[[], int] = lambda: 1) -> None:
        self.queue, self.runs, self.log, self.written = queue, runs, log, written
        self.gather = gather
        self._queued: deque[tuple[Ending, Outcome]] = deque()
        self._added = asyncio.Event()
        self._enough = asyncio.Event()  # as many endings queued as the write waits for
        self._want = 0
        self._lock = asyncio.Lock()

    def add(self, ending: Ending, outcome: Outcome) -> None:
        self._queued.append((ending, outcome))
        self._added.set()
        if len(self._queued) >= self._want:
            self._enough.set()

    async def loop(self) -> None:
        """Write as jobs end, until cancelled."""
        async def write_when_added() -> None:
            await self._added.wait()
            self._added.clear()
            self._want = self.gather()
            if len(self._queued) < self._want:
                self._enough.clear()
                timer = asyncio.get_running_loop().call_later(GATHER_S, self._enough.set)
                try:
                    await self._enough.wait()
                finally:
                    timer.cancel()
                    self._want = 0
            await self.flush()

        await forever(self.log, "final write", write_when_added, until=asyncio.Event())

    async def flush(self) -> None:
        """Write everything queued (retried while Redis is down). One flush at a time: the
        drain's flush waits for the write in flight, so a job whose result is being written
        is never handed back as unfinished."""
        async with self._lock:
            await self._write_queued()

    async def _write_queued(self) -> None:
        items = list(self._queued)
        self._queued.clear()
        if not items:
            return
        try:
            refusals = await self._write([ending for ending, _ in items])
        except Exception:  # a bug, not Redis: stop renewing, so the leases run out and the
            for ending, _ in items:  # jobs are reclaimed and run again
                self.runs.pop(ending.delivery.entry_id, None)
            self.written()
            raise
        for (ending, outcome), refused in zip(items, refusals, strict=True):
            d = ending.delivery
            self.runs.pop(d.entry_id, None)
            if isinstance(refused, NotOwner):
                self.log.warning("write fenced: the job is no longer ours", job_id=d.job_id,
                                 error=str(refused))
            elif refused is not None:  # its lease runs out; it is reclaimed and runs again
                self.log.error("final write refused", job_id=d.job_id, error=str(refused),
                               error_type=type(refused).__name__)
            else:
                self.log.info("job " + outcome.kind, job_id=d.job_id, **outcome.log_fields())
        self.written()

    async def _write(self, endings: list[Ending]) -> list[BaseException | None]:
        """``write_endings``, retried while Redis is unavailable. A batch that Redis refuses
        for another reason is written one ending at a time, so one bad write refuses only its
        own job."""
        backoff = Backoff()
        while True:
            try:
                return list(await self.queue.write_endings(endings))
            except UNAVAILABLE as exc:
                await backoff.wait(self.log, "final write", exc)
            except RedisError as exc:
                if len(endings) == 1:
                    return [exc]
                return [(await self._write([e]))[0] for e in endings]
