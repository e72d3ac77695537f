"""What the gateway knows of worker and model types: its installed plugins plus the declarations
that workers announce in Redis (streams/registry.py), so a gateway without a plugin (or without
its heavy dependencies) still routes and validates its jobs.

Requests are validated and routed against this process's catalogue (schemas/catalogue.py): no
Redis round trip per request. The announcements are read every ``CATALOGUE_REFRESH_S`` and once
more before a submit is refused for an unknown model type or an unroutable request (concurrent
refusals share one read), so a type a worker announced a moment ago is accepted at once. A type
learned is followed by the live hub (SSE, /ws), the retry promoter and the inspection routes.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from fastapi.exceptions import RequestValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from gateway.hub import Hub
from gateway.settings import GatewaySettings
from schemas.catalogue import STATE
from schemas.plugins import LoadedPlugin
from schemas.requests import ROUTING_ERROR, UNKNOWN_MODEL_TYPE
from streams import registry
from streams.backoff import Backoff

log = structlog.get_logger("aiq.gateway.catalogue")
STOP_GRACE_S = 5.0


class CatalogueWatcher:
    def __init__(self, settings: GatewaySettings, redis: Redis, hub: Hub) -> None:
        self.period_s = settings.catalogue_refresh_s
        self.prefix = settings.redis_prefix
        self.redis = redis
        self.hub = hub
        self.refreshes = 0  # reads of the announcements since start (tests, logs)
        self._cache: dict[str, LoadedPlugin] = {}  # digest -> parsed declaration
        self._logged: set[str] = set()
        self._inflight: asyncio.Task[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Refresh at once, then every period (0: only before a refusal)."""
        for problem in STATE.problems:  # installed plugins that did not load
            log.warning("catalogue: an installed plugin is left out", problem=problem)
        self._task = asyncio.create_task(self._loop(), name="aiq-catalogue")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError, RedisError,
                                         OSError):
                    await asyncio.wait_for(task, STOP_GRACE_S)
        self._task = self._inflight = None

    async def refresh(self) -> bool:
        """Read the announcements now (callers meanwhile share the read); whether the catalogue
        changed. Raises what Redis raises."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._refresh(), name="aiq-catalogue-read")
        return await asyncio.shield(self._inflight)

    async def _refresh(self) -> bool:
        plugins, problems = await registry.announced(self.redis, self.prefix, self._cache)
        self.refreshes += 1
        self._cache = {d: p for d, p in self._cache.items() if any(p is q for q in plugins)}
        for problem in problems:
            if problem not in self._logged:
                self._logged.add(problem)
                log.warning("catalogue: an announced declaration is left out", problem=problem)
        new = STATE.new_types(plugins)
        if new:
            await self.hub.follow(new)  # its feed is read before the first job can be sent
        changed = STATE.learn(plugins)
        if changed:
            log.info("catalogue: learned from workers' announcements",
                     worker_types=sorted(STATE.tables.types),
                     announced=sorted(p.name for p in plugins))
        return changed

    async def _loop(self) -> None:
        backoff, down = Backoff(max(self.period_s, 0.5), max(self.period_s, 30.0)), False
        while not self._stopping:
            wait = self.period_s
            try:
                await self.refresh()
                down = False
                backoff.reset()
            except (RedisError, OSError) as exc:
                if not down and not self._stopping:
                    log.warning("catalogue: redis unavailable; retrying", error=str(exc))
                down, wait = True, backoff.next()
            except Exception:  # a bug must not stop the gateway learning types
                log.exception("catalogue: refresh failed; retrying")
                wait = backoff.next()
            if self._stopping or not wait:
                return
            await asyncio.sleep(wait)


def catalogue_of(conn: HTTPConnection) -> CatalogueWatcher:
    watcher: CatalogueWatcher = conn.app.state.catalogue
    return watcher


_LEARNABLE = (UNKNOWN_MODEL_TYPE, ROUTING_ERROR)  # refusals a type learned later may undo


def may_learn(exc: RequestValidationError) -> bool:
    """Whether the refusal names a model type or a route a worker may have announced since."""
    return any(err.get("type") in _LEARNABLE for err in exc.errors())
