"""Fixtures of the queue-level framework suites: one Redis and one client per module, because
their worker processes outlive single tests (training is the slow part, done once)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis import Redis as SyncRedis

from aiq.redis_server import RedisServer
from streams.connection import client
from streams.producer import Producer


@pytest.fixture(scope="module")
def url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied once for the module (not per test like ``redis_url``)."""
    redis_server.ensure_running()
    with SyncRedis.from_url(redis_server.url) as sync:
        sync.flushall()
    return redis_server.url


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def producer(url: str) -> AsyncIterator[Producer]:
    redis = client(url)
    try:
        yield Producer(redis)
    finally:
        await redis.aclose()
