"""Executor threads for job code, with a cheap way back to the event loop.

``loop.run_in_executor`` costs a ``concurrent.futures.Future`` (with its own lock and condition),
a chained asyncio future and one loop wake-up per call. Here each thread takes calls from a
``SimpleQueue`` and appends what it got to a deque; the loop is woken only if no wake is already
pending, so a burst of short jobs costs one wake-up, not one per job.

On Linux the threads run under ``SCHED_BATCH`` (``JOB_THREAD_POLICY``, default ``batch``): a job
thread whose blocking call returns does not preempt the thread running on its CPU. That one
usually holds the interpreter lock (the event loop, or another job thread), so preempting it
only bought the woken thread a futex wait and two more context switches. Job code is batch work
by nature; the event loop keeps the normal policy, so its heartbeats and lease renewals still
preempt busy job threads. Native threads and programs a job starts inherit the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Done = Callable[[Any, BaseException | None], None]  # (result, exception), called on the loop
_Call = tuple[Done, Callable[..., Any], tuple[Any, ...]]
Policy = Literal["batch", "normal"]


def set_policy(threads: list[threading.Thread], policy: Policy) -> None:
    """Put started threads of this process under ``SCHED_BATCH`` (``batch``) or
    ``SCHED_OTHER`` (``normal``). Linux only, and unprivileged: a thread may always move between
    these two. Raises OSError where the kernel or a sandbox refuses, AttributeError where the
    platform has no such policy or thread ids."""
    number = os.SCHED_BATCH if policy == "batch" else os.SCHED_OTHER
    for thread in threads:
        if thread.native_id is None:  # 0 would name the calling thread: the event loop
            raise AttributeError("no native thread ids on this platform")
        os.sched_setscheduler(thread.native_id, number, os.sched_param(0))


class JobThreads:
    """``policy``: the scheduling policy asked for the threads; ``self.policy`` is the one they
    got (``normal`` where ``batch`` is refused, with the reason in ``policy_error``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int,
                 policy: Policy = "normal") -> None:
        self._loop = loop
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._done: deque[tuple[Done, Any, BaseException | None]] = deque()
        self._wake_pending = False
        # Daemon threads: a job stuck in native code must not keep a stopping worker alive
        # (its entry was handed back before the process exits).
        self._threads = [threading.Thread(target=self._serve, name=f"aiq-job-{n}", daemon=True)
                         for n in range(size)]
        self.policy: Policy = policy
        self.policy_error = ""
        for thread in self._threads:
            thread.start()  # its native id is set once start() returns
        if policy == "batch":
            try:
                set_policy(self._threads, "batch")
            except (OSError, AttributeError) as exc:
                self.policy, self.policy_error = "normal", str(exc) or type(exc).__name__
                with contextlib.suppress(OSError, AttributeError):
                    set_policy(self._threads, "normal")  # those already moved, back

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
