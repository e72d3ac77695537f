"""The worker's loops never die: Redis unavailable, failing over (READONLY) or full (OOM) backs
off and retries; any other error is logged with its traceback, then backs off and retries too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from streams.backoff import Backoff as BaseBackoff
from streams.errors import UNAVAILABLE


class Backoff(BaseBackoff):
    """``streams.backoff.Backoff`` (0.1 s doubling to 5 s) that logs what it waits for."""

    async def wait(self, log: Any, what: str, exc: BaseException, quiet: bool = False) -> None:
        if not quiet:
            log.warning("redis unavailable; retrying", during=what, error=str(exc),
                        error_type=type(exc).__name__, retry_in_s=self.delay)
        await asyncio.sleep(self.next())


async def forever(log: Any, what: str, step: Callable[[], Awaitable[None]],
                  until: asyncio.Event) -> None:
    """Run ``step`` over and over until ``until`` is set (or the task is cancelled)."""
    backoff = Backoff()
    while not until.is_set():
        try:
            await step()
            backoff.reset()
        except UNAVAILABLE as exc:
            await backoff.wait(log, what, exc)
        except Exception as exc:
            log.exception("worker loop error; retrying", during=what)
            await backoff.wait(log, what, exc, quiet=True)


async def until_done(log: Any, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
    """``call()`` once it succeeds, backing off while Redis is unavailable."""
    backoff = Backoff()
    while True:
        try:
            return await call()
        except UNAVAILABLE as exc:
            await backoff.wait(log, what, exc)


async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``event`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


@contextlib.contextmanager
def unless_unavailable(log: Any, what: str) -> Iterator[None]:
    """Best effort: a Redis outage skips the block with a warning (shutdown steps)."""
    try:
        yield
    except UNAVAILABLE as exc:
        log.warning("redis unavailable", during=what, error=str(exc))
