"""The bridge between a job's thread and the event loop: progress reports, coalesced, and the
flags (cancel, interrupt, lost lease, timeout) that stop the job at its next step boundary."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from consumers.frameworks.base import CancelRequested, StopRequested, TimedOut
from streams.consumer import QueueConsumer
from streams.delivery import Delivery
from streams.errors import UNAVAILABLE, JobNotFound, NotOwner

Publish = Callable[[Delivery, dict[str, Any]], Awaitable[bool]]


class JobRun:
    """State of one running job, shared by its thread and the loop."""

    def __init__(
        self, delivery: Delivery, loop: asyncio.AbstractEventLoop, publish: Publish,
        min_interval_s: float, timeout_s: float | None = None,
    ) -> None:
        self.delivery = delivery
        self.timeout_s = timeout_s
        self.cancel_requested = False
        self.interrupted = False  # worker draining: hand the job back
        self.lost = False  # lease lost: another worker owns the job now
        self.begun = False  # its thread started the job's code (see ``begin``)
        self.ended_at: float | None = None  # when its code returned (``end``)
        self.handed_back = False  # read ahead, waited too long, handed back (``take_back``)
        self._loop = loop
        self._publish = publish
        self._interval = min_interval_s
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None
        self._held: list[dict[str, Any]] = []  # last report of each stage left behind
        self._sent_stage = ""
        self._task: asyncio.Task[None] | None = None
        self._last_sent = 0.0
        self.queued_at = self.began_at = time.monotonic()
        self.deadline: float | None = None  # set by ``begin``: the timeout counts from there

    def begin(self) -> None:
        """Called by the job's thread as it starts the job's code: the timeout counts from
        here, not from the start transition (a job read ahead waits for a thread first).
        Raises StopRequested when the loop took the job back meanwhile (``take_back``)."""
        with self._lock:
            if self.handed_back:
                raise StopRequested
            self.begun = True
            self.began_at = time.monotonic()
            if self.timeout_s is not None:
                self.deadline = self.began_at + self.timeout_s

    def end(self) -> None:
        """Called by the job's thread as the job's code returns or raises."""
        self.ended_at = time.monotonic()

    def ran_s(self) -> float:
        """Seconds the job's code ran (0 when it never began)."""
        return (self.ended_at or time.monotonic()) - self.began_at if self.begun else 0.0

    def take_back(self) -> bool:
        """The loop's claim on a job read ahead that still waits for a thread: True when its
        thread has not begun it (and now never will), False once it has."""
        with self._lock:
            if self.begun:
                return False
            self.handed_back = True
            return True

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's event loop (code in the job's thread schedules Redis writes on it)."""
        return self._loop

    def check(self) -> None:
        """Raise at a step boundary when the job must stop."""
        if self.cancel_requested:
            raise CancelRequested
        if self.interrupted or self.lost:
            raise StopRequested
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimedOut(f"the job ran past its timeout of {self.timeout_s:g} s")

    def __call__(self, stage: str, *, percent: float | None = None, **fields: Any) -> None:
        """The ``Progress`` callback, called from the job's thread."""
        self.check()
        data: dict[str, Any] = {
            "stage": stage, **{k: v for k, v in fields.items() if v is not None and v != ""}}
        if percent is None and fields.get("steps") and fields.get("step") is not None:
            percent = 100.0 * fields["step"] / fields["steps"]
        if percent is not None:
            data["percent"] = round(float(percent), 2)
            if 0 < percent < 100:
                elapsed = time.monotonic() - self.began_at
                data["eta_s"] = round(elapsed * (100 - percent) / percent, 1)
        with self._lock:
            previous, self._latest = self._latest, data
            if previous is not None and previous["stage"] != stage:
                self._held.append(previous)  # coalescing never swallows a stage change
        if previous is None:
            self._loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._send())

    async def _send(self) -> None:
        """Publish at most one report per interval (the latest), except that a new stage goes
        out at once and the last report of every stage is kept."""
        while True:
            with self._lock:
                new_stage = self._latest is not None and self._latest["stage"] != self._sent_stage
            wait = self._last_sent + self._interval - time.monotonic()
            if wait > 0 and not new_stage:
                await asyncio.sleep(wait)
            with self._lock:
                batch = [*self._held, *([self._latest] if self._latest else [])]
                self._held.clear()
                self._latest = None
            if not batch:
                return
            self._last_sent = time.monotonic()
            for data in batch:
                self._sent_stage = data["stage"]
                if await self._publish(self.delivery, data):
                    self.cancel_requested = True

    def has_pending_report(self) -> bool:
        with self._lock:
            queued = self._latest is not None or bool(self._held)
        return queued or (self._task is not None and not self._task.done())

    async def drain(self) -> None:
        """Deliver the last report before the job's final state is written."""
        if self._task is not None:
            await self._task
        with self._lock:
            pending = self._latest is not None or bool(self._held)
        if pending:
            self._last_sent = 0.0
            await self._send()


class ProgressPublisher:
    """Writes a job's progress reports (``progress.lua``); True when a cancel was requested.
    Best effort: a report Redis cannot take now, or JSON cannot hold, is dropped; a fenced
    one marks the job lost (another worker owns it)."""

    def __init__(self, queue: QueueConsumer, runs: dict[str, JobRun], log: Any) -> None:
        self.queue, self.runs, self.log = queue, runs, log

    async def __call__(self, d: Delivery, data: dict[str, Any]) -> bool:
        try:
            return await self.queue.progress(d, data)
        except (NotOwner, JobNotFound):  # another worker has it, or the job is gone
            run = self.runs.get(d.entry_id)
            if run is not None:
                run.lost = True
            return False
        except UNAVAILABLE:
            return False  # the next report goes out when Redis is back
        except (RedisError, TypeError) as exc:
            self.log.warning("progress report dropped", job_id=d.job_id, error=str(exc),
                             error_type=type(exc).__name__)
            return False
