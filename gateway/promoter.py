"""The gateway's retry promoter: every ``PROMOTE_RETRIES_S`` it moves the due retries of every
worker type from their delayed set back into their stream (``streams.retries``).

Workers promote their own type's retries too, but a type scaled to zero has no worker: its
retry would wait in the delayed set, which XLEN does not count, so KEDA would never wake the
type for it. With the gateway promoting, a due retry is in its stream within about one period
whatever runs. Several gateways promoting at once are safe (the script is atomic).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.settings import GatewaySettings
from schemas.catalogue import CATALOGUE
from streams.backoff import Backoff
from streams.keys import QueueKeys
from streams.retries import promote_all_due

log = structlog.get_logger("aiq.gateway.promoter")
STOP_GRACE_S = 5.0


class Promoter:
    def __init__(self, settings: GatewaySettings, redis: Redis) -> None:
        self.period_s = settings.promote_retries_s
        self.redis = redis
        self.limits = settings.limits
        self.prefix = settings.redis_prefix
        self._keys: dict[str, QueueKeys] = {}
        self.promoted = 0  # since start, for tests and logs
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the timer; a period of 0 turns it off (only workers promote then)."""
        if self.period_s > 0:
            self._task = asyncio.create_task(self._loop(), name="aiq-retry-promoter")

    async def stop(self) -> None:
        self._stopping = True  # redis-py may turn the cancellation into a ConnectionError
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, STOP_GRACE_S)
            self._task = None

    async def _loop(self) -> None:
        backoff, down = Backoff(self.period_s, max(self.period_s, 5.0)), False
        while not self._stopping:
            wait = self.period_s
            try:
                await self.tick()
                if down:
                    log.info("promoter: redis back; promoting retries again")
                down = False
                backoff.reset()
            except (RedisError, OSError) as exc:
                if not down and not self._stopping:
                    log.warning("promoter: redis unavailable; retrying with backoff",
                                error=str(exc))
                down, wait = True, backoff.next()
            except Exception:  # a bug must not stop retries from coming back for good
                log.exception("promoter: tick failed; retrying")
                wait = backoff.next()
            if not self._stopping:
                await asyncio.sleep(wait)

    @property
    def keys(self) -> list[QueueKeys]:
        """The keys of every type of the catalogue now (it grows as the gateway learns types)."""
        return [self._keys.get(name) or self._keys.setdefault(name, QueueKeys(name, self.prefix))
                for name in CATALOGUE]

    async def tick(self) -> int:
        """Promote every type's due retries once; how many were promoted."""
        count = await promote_all_due(self.redis, self.keys, self.limits)
        if count:
            self.promoted += count
            log.info("promoter: due retries back in their streams", promoted=count)
        return count
