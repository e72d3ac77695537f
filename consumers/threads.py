"""Executor threads for job code, with a cheap way back to the event loop.

``loop.run_in_executor`` costs a ``concurrent.futures.Future`` (with its own lock and condition),
a chained asyncio future and one loop wake-up per call. Here each thread takes calls from a
``SimpleQueue`` and appends what it got to a deque; the loop is woken only if no wake is already
pending, so a burst of short jobs costs one wake-up, not one per job.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")
Done = Callable[[Any, BaseException | None], None]  # (result, exception), called on the loop
_Call = tuple[Done, Callable[..., Any], tuple[Any, ...]]


class JobThreads:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._done: deque[tuple[Done, Any, BaseException | None]] = deque()
        self._wake_pending = False
        # Daemon threads: a job stuck in native code must not keep a stopping worker alive
        # (its entry was handed back before the process exits).
        self._threads = [threading.Thread(target=self._serve, name=f"aiq-job-{n}", daemon=True)
                         for n in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], done: Done) -> None:
        """Run ``fn(*args)`` in a job thread, then ``done(result, exception)`` on the loop."""
        self._calls.put((done, fn, args))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a job thread and await its result."""
        fut: asyncio.Future[T] = self._loop.create_future()

        def done(result: Any, exc: BaseException | None) -> None:
            if fut.cancelled():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        self.submit(fn, args, done)
        return await fut

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            done, fn, args = call
            try:
                item: tuple[Done, Any, BaseException | None] = (done, fn(*args), None)
            except BaseException as exc:  # handed to ``done`` on the loop, not lost here
                item = (done, None, exc)
            self._done.append(item)  # append first, then look at the flag (see _deliver)
            if not self._wake_pending:
                self._wake_pending = True
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        self._wake_pending = False  # clear first: anything appended after this wakes again
        while self._done:
            done, result, exc = self._done.popleft()
            done(result, exc)

    def shutdown(self) -> None:
        """Let idle threads exit; a thread still in a job ends with it (or with the process)."""
        for _ in self._threads:
            self._calls.put(None)
