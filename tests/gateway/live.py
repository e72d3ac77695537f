"""A real gateway on a free port for the streaming tests (SSE, WebSocket), and an SSE reader.

httpx's ASGI transport buffers a response until it ends, so endless streams need real HTTP: the
app runs under uvicorn as a task of the test's own event loop (the test can look at its hub).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.hub import Hub
from gateway.settings import GatewaySettings
from tests.support import eventually


@dataclass
class LiveGateway:
    app: FastAPI
    url: str  # http://127.0.0.1:<port>
    settings: GatewaySettings

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.hub
        return hub


@contextlib.asynccontextmanager
async def live_gateway(redis_url: str, **overrides: Any) -> AsyncIterator[LiveGateway]:
    settings = GatewaySettings(redis_url=redis_url, **overrides)
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # a failed start-up raises here
        return server.started

    await eventually(started, what="uvicorn started")
    port = server.servers[0].sockets[0].getsockname()[1]
    gateway = LiveGateway(app, f"http://127.0.0.1:{port}", settings)
    await eventually(lambda: _ready(gateway.hub), what="hub ready")
    try:
        yield gateway
    finally:
        gateway.hub.close_clients()  # what a server should do first on SIGTERM (see Hub)
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def _ready(hub: Hub) -> bool:
    return hub.ready.is_set()


@dataclass
class Frame:
    """One SSE message: an event (id, event, data) or a comment (``: ping``)."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    comment: str | None = None

    @property
    def json(self) -> dict[str, Any]:
        assert self.data is not None
        body: dict[str, Any] = orjson.loads(self.data)
        return body


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The SSE messages of a streaming response, as they arrive, until the server ends it."""
    frame = Frame()
    async for line in response.aiter_lines():
        if line == "":
            if frame != Frame():
                yield frame
            frame = Frame()
        elif line.startswith(":"):
            frame.comment = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            setattr(frame, name, value.removeprefix(" "))


async def read_events(client: httpx.AsyncClient, url: str, limit: int | None = None,
                      **headers: str) -> tuple[list[Frame], bool]:
    """The event frames of ``url`` (comments skipped) until the stream ends (True) or ``limit``
    events were read (False; the connection is then closed)."""
    out: list[Frame] = []
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for frame in frames(response):
            if frame.comment is None:
                out.append(frame)
            if limit is not None and len(out) >= limit:
                return out, False
    return out, True
