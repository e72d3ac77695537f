"""A command job's output lines, from its thread to Redis in batches: one ``append_log`` call
per ``LOG_FLUSH_S`` or ``LOG_BATCH_LINES`` lines (never one round trip per line), in order.

At most one write is in flight; lines keep collecting meanwhile. Past ``4 x LOG_BATCH_LINES``
waiting lines the thread waits for that write, so a program that prints faster than Redis
takes its lines waits on its own pipe rather than growing the worker's memory. A write Redis
cannot take now (down, failing over) is kept and sent again, up to ``MAX_KEPT`` lines; beyond
that the oldest go, and a note says how many. A fenced write (another worker owns the job now)
marks the run lost, which stops the program.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from streams.errors import UNAVAILABLE, JobNotFound, NotOwner

Line = tuple[str, str]  # (stdout | stderr | aiq, text)
Write = Callable[[list[Line]], Awaitable[Any]]
MAX_KEPT = 50_000
CLOSE_TIMEOUT_S = 30.0
RETRY_PAUSE_S = 0.2

log = structlog.get_logger("aiq.worker.command")


class LogPump:
    def __init__(self, write: Write, loop: asyncio.AbstractEventLoop, flush_s: float,
                 batch_lines: int, on_lost: Callable[[], None]) -> None:
        self.write, self.loop = write, loop
        self.flush_s, self.batch_lines = flush_s, batch_lines
        self.on_lost = on_lost
        self.pending: list[Line] = []
        self.dropped = 0  # lines given up (Redis unavailable too long)
        self.written = 0
        self.retried = 0  # writes Redis could not take (sent again)
        self._inflight: tuple[concurrent.futures.Future[Any], list[Line]] | None = None
        self._last = time.monotonic()

    def add(self, stream: str, lines: list[str]) -> None:
        self.pending += [(stream, line) for line in lines]
        if len(self.pending) >= self.batch_lines:
            self.flush()

    def tick(self) -> None:
        if self.pending and time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Send the next batch unless one is in flight (then wait for it only when far behind)."""
        if self._inflight is not None:
            future = self._inflight[0]
            if not future.done() and len(self.pending) < 4 * self.batch_lines:
                return
            self._settle(CLOSE_TIMEOUT_S)
        if not self.pending:
            return
        batch, self.pending = self.pending[:self.batch_lines], self.pending[self.batch_lines:]
        future = asyncio.run_coroutine_threadsafe(self._send(batch), self.loop)
        self._inflight, self._last = (future, batch), time.monotonic()

    async def _send(self, batch: list[Line]) -> Any:
        return await self.write(batch)

    def _settle(self, timeout: float) -> None:
        """Wait for the write in flight and take its outcome."""
        assert self._inflight is not None
        future, batch = self._inflight
        self._inflight = None
        try:
            future.result(timeout)
            self.written += len(batch)
        except (NotOwner, JobNotFound):
            self.on_lost()
        except UNAVAILABLE:  # concurrent.futures.TimeoutError is TimeoutError (3.11)
            future.cancel()
            self.retried += 1
            self.pending[:0] = batch  # again, first
            excess = len(self.pending) - MAX_KEPT
            if excess > 0:
                del self.pending[:excess]
                self.dropped += excess
        except Exception as exc:  # a bug, or the loop closed: not retried
            log.warning("log lines dropped", lines=len(batch), error=str(exc))
            self.dropped += len(batch)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Write everything still waiting (before the job's final state is written)."""
        deadline = time.monotonic() + timeout
        while (self.pending or self._inflight) and time.monotonic() < deadline:
            if self._inflight is not None:
                retried = self.retried
                self._settle(max(deadline - time.monotonic(), 0.01))
                if self.retried > retried:  # Redis is away: not a tight loop meanwhile
                    time.sleep(min(RETRY_PAUSE_S, max(deadline - time.monotonic(), 0)))
            if self.pending and time.monotonic() < deadline:
                self.flush()
        if self._inflight is not None:
            self._inflight[0].cancel()
            self._inflight = None
        self.dropped += len(self.pending)
        self.pending = []
