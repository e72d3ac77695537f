"""Gateway fixtures: the real app (lifespan included) over httpx's ASGI transport, real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from gateway.app import create_app
from gateway.settings import GatewaySettings

ClientFactory = Callable[..., AbstractAsyncContextManager[AsyncClient]]


@pytest.fixture
def make_client(redis_url: str) -> ClientFactory:
    """``async with make_client(app=None, **settings) as client``: a started app and a client.

    App exceptions become responses (as under a real server), so 500s can be asserted."""

    @asynccontextmanager
    async def factory(app: FastAPI | None = None, **overrides: Any) -> AsyncIterator[AsyncClient]:
        app = app or create_app(GatewaySettings(redis_url=redis_url, **overrides))
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with LifespanManager(app), AsyncClient(transport=transport,
                                                     base_url="http://aiq.test") as client:
            yield client

    return factory


@pytest_asyncio.fixture(loop_scope="session")
async def client(make_client: ClientFactory) -> AsyncIterator[AsyncClient]:
    async with make_client() as c:
        yield c
