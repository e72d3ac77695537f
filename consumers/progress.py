"""The bridge between a job's thread and the event loop: progress reports, coalesced, and the
flags (cancel, interrupt, lost lease) that stop the job at its next step boundary."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from consumers.frameworks.base import JobCancelled, JobInterrupted
from streams.consumer import Delivery

Publish = Callable[[Delivery, dict[str, Any]], Awaitable[bool]]


class JobRun:
    """State of one running job, shared by its thread and the loop."""

    def __init__(
        self, delivery: Delivery, loop: asyncio.AbstractEventLoop, publish: Publish,
        min_interval_s: float,
    ) -> None:
        self.delivery = delivery
        self.cancel_requested = False
        self.interrupted = False  # worker draining: hand the job back
        self.lost = False  # lease lost: another worker owns the job now
        self._loop = loop
        self._publish = publish
        self._interval = min_interval_s
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_sent = 0.0
        self._started = time.monotonic()

    def check(self) -> None:
        """Raise at a step boundary when the job must stop."""
        if self.cancel_requested:
            raise JobCancelled
        if self.interrupted or self.lost:
            raise JobInterrupted

    def __call__(self, stage: str, *, percent: float | None = None, **fields: Any) -> None:
        """The ``Progress`` callback, called from the job's thread."""
        self.check()
        data: dict[str, Any] = {"stage": stage, **{k: v for k, v in fields.items() if v}}
        if percent is None and fields.get("steps") and fields.get("step") is not None:
            percent = 100.0 * fields["step"] / fields["steps"]
        if percent is not None:
            data["percent"] = round(float(percent), 2)
            if 0 < percent < 100:
                elapsed = time.monotonic() - self._started
                data["eta_s"] = round(elapsed * (100 - percent) / percent, 1)
        with self._lock:
            first = self._latest is None
            self._latest = data
        if first:
            self._loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._send())

    async def _send(self) -> None:
        while True:
            wait = self._last_sent + self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            with self._lock:
                data, self._latest = self._latest, None
            if data is None:
                return
            self._last_sent = time.monotonic()
            if await self._publish(self.delivery, data):
                self.cancel_requested = True

    def has_pending_report(self) -> bool:
        with self._lock:
            return self._latest is not None or (self._task is not None and not self._task.done())

    async def drain(self) -> None:
        """Deliver the last report before the job's final state is written."""
        if self._task is not None:
            await self._task
        with self._lock:
            pending = self._latest is not None
        if pending:
            self._last_sent = 0.0
            await self._send()
