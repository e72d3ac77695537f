"""``WS /ws``: the dashboard feed (protocol in docs/API.md).

Server to client, JSON text messages:

* ``snapshot`` on connect (and on request): queues, live workers, the most recent jobs;
* ``event``: a live job event (with its ``worker_type``) that matches the client's filter;
* ``workers`` and ``queues`` every ``WS_REFRESH_S``;
* ``lagged``: ``dropped`` events were discarded because the client read too slowly;
* ``filter``: the filter now in force (the answer to a ``filter`` message);
* ``error``: a client message was refused (``{"code", "message", "details"}`` as over HTTP).

Client to server: ``{"type": "filter", "worker_type": ..., "job_id": ...}`` (null: any) and
``{"type": "snapshot"}``. Close codes: 1013 when the client fell more than ``WS_MAX_LAG``
events behind or Redis was unavailable at connect; 1001 when the gateway shuts down.

The client is subscribed to the hub before its snapshot is read, so no event falls between the
two (an event may also be reflected in the snapshot; applying it again is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from redis.exceptions import RedisError

from gateway.deps import HubDep, ProducerDep, SettingsDep
from gateway.errors import error_response, field_errors, refuse
from gateway.hub import DashboardSubscription, EventFilter, dumps
from gateway.settings import GatewaySettings
from schemas.catalogue import CATALOGUE
from schemas.records import status_view
from schemas.requests import JOB_ID_PATTERN
from streams.inspect import queue_stats
from streams.producer import Producer
from streams.registry import list_workers

router = APIRouter(tags=["operations"])

SNAPSHOT_JOBS = 50
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013


class FilterMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["filter"]
    worker_type: str | None = None
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN)

    @field_validator("worker_type")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in CATALOGUE:
            raise ValueError(f"unknown worker type {value[:80]!r}; known: "
                             + ", ".join(sorted(CATALOGUE)))
        return value


class SnapshotMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["snapshot"]


ClientMessage = Annotated[FilterMessage | SnapshotMessage, Field(discriminator="type")]
_CLIENT: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
_GONE = (WebSocketDisconnect, OSError)


def _error(message: str, details: Any = None, code: str = "validation_error") -> str:
    return dumps({"type": "error", "error": {"code": code, "message": message,
                                             "details": details}})


class _Dashboard:
    """One connected dashboard: a receiver and a sender task sharing one send lock."""

    def __init__(self, websocket: WebSocket, sub: DashboardSubscription, producer: Producer,
                 settings: GatewaySettings) -> None:
        self.ws, self.sub, self.producer, self.settings = websocket, sub, producer, settings
        self.lock = asyncio.Lock()

    async def send(self, *texts: str) -> None:
        async with self.lock:
            for text in texts:
                await self.ws.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, *_GONE):
            async with self.lock:
                await self.ws.close(code, reason)

    async def snapshot(self) -> str:
        prefix = self.settings.redis_prefix
        queues = await queue_stats(self.producer.redis, prefix)
        workers = await list_workers(self.producer.redis, prefix)
        jobs = await self.producer.list(limit=SNAPSHOT_JOBS)
        return dumps({"type": "snapshot",
                      "queues": [q.model_dump(mode="json") for q in queues],
                      "workers": [w.model_dump(mode="json") for w in workers],
                      "jobs": [status_view(j).model_dump(mode="json") for j in jobs]})

    async def run(self) -> None:
        try:
            await self.send(await self.snapshot())
        except (RedisError, OSError):
            await self.close(CLOSE_TRY_AGAIN_LATER, "redis unavailable")
            return
        tasks = [asyncio.create_task(self.receive_loop()), asyncio.create_task(self.send_loop())]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, _GONE):
                raise exc

    async def send_loop(self) -> None:
        while True:
            item = await self.sub.get()
            if self.sub.overrun:
                await self.close(CLOSE_TRY_AGAIN_LATER, "too slow: events were dropped")
                return
            if self.sub.closed:
                await self.close(CLOSE_GOING_AWAY, "gateway shutting down")
                return
            texts = []
            if dropped := self.sub.take_dropped():
                texts.append(dumps({"type": "lagged", "dropped": dropped}))
            if item is not None and self.sub.filter.accepts(item):  # the filter of now
                texts.append(item.ws_text)
            await self.send(*texts)

    async def receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes") or b""
            await self.handle(raw)

    async def handle(self, raw: str | bytes) -> None:
        try:
            msg = _CLIENT.validate_python(orjson.loads(raw))
        except orjson.JSONDecodeError:
            await self.send(_error("messages are JSON objects"))
            return
        except ValidationError as exc:
            fields = field_errors(exc.errors())
            await self.send(_error("; ".join(f"{f['field']}: {f['message']}" for f in fields),
                                   fields))
            return
        if isinstance(msg, SnapshotMessage):
            try:
                await self.send(await self.snapshot())
            except (RedisError, OSError):
                await self.send(_error("Redis is unavailable; retry shortly",
                                       code="redis_unavailable"))
            return
        self.sub.set_filter(EventFilter(msg.worker_type, msg.job_id))
        await self.send(dumps({"type": "filter", "worker_type": msg.worker_type,
                               "job_id": msg.job_id}))


def origin_allowed(websocket: WebSocket, allowed: frozenset[str]) -> bool:
    """A browser names the page that opens a WebSocket in ``Origin``; any page could otherwise
    read the dashboard feed (with the key in its URL, or none). Allowed: no Origin (not a
    browser), the gateway's own origin (same host and port as the request), or one listed in
    ALLOWED_ORIGINS (``*``: any)."""
    origin = websocket.headers.get("origin")
    if origin is None or "*" in allowed or origin.rstrip("/") in allowed:
        return True
    host = websocket.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower() != ""


@router.websocket("/ws")
async def dashboard(websocket: WebSocket, hub: HubDep, producer: ProducerDep,
                    settings: SettingsDep) -> None:
    """Dashboard feed: a snapshot, then live job events and periodic workers/queues."""
    if not origin_allowed(websocket, settings.origins):
        await refuse(websocket.scope, websocket.receive, websocket.send, error_response(
            403, "origin_not_allowed", "a page of this origin may not open the dashboard feed "
            "(ALLOWED_ORIGINS)"), (4403, "origin not allowed"))
        return
    await websocket.accept()
    sub = hub.subscribe_dashboard()  # before the snapshot: nothing falls between the two
    try:
        await _Dashboard(websocket, sub, producer, settings).run()
    finally:
        hub.unsubscribe(sub)
