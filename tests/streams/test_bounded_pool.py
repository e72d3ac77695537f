"""The gateway's bounded pool (streams/connection.py ``BoundedPool``): never more than
``max_connections`` connections, a caller past them waits its turn (up to ``timeout``, then
ConnectionError), and a waiter that gives up or is cancelled leaks no slot."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.connection import BoundedPool, connect
from tests.support import eventually

NAME = "aiq-test-bounded"


def bounded(url: str, size: int, timeout: float) -> Redis:
    client = connect(url, blocking_pool=True, max_connections=size, timeout=timeout,
                     client_name=NAME)
    assert isinstance(client.connection_pool, BoundedPool)
    return client


async def no_free_slot(client: Redis) -> bool:
    return client.connection_pool._free == 0


async def waiting(client: Redis, n: int) -> bool:
    return len(client.connection_pool._waiters) >= n


async def named_connections(redis: Redis) -> int:
    return sum(1 for c in await redis.client_list() if c.get("name") == NAME)


async def test_many_callers_share_a_few_connections_in_turn(redis_url: str, redis: Redis
                                                            ) -> None:
    client = bounded(redis_url, 3, timeout=60)
    try:
        peak = 0

        async def blocked_pop(i: int) -> None:
            await client.blpop([f"bounded:{i}"], timeout=0.05)  # holds its connection 50 ms

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(client.connection_pool._in_use_connections))
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(blocked_pop(i) for i in range(12)),
                             *(client.incr("bounded:n") for _ in range(200)))
        sampler.cancel()
        assert await client.get("bounded:n") == "200"
        assert peak <= 3 and await named_connections(redis) <= 3
        assert client.connection_pool._free == 3 and not client.connection_pool._waiters
    finally:
        await client.aclose()


async def test_a_caller_past_the_bound_gives_up_after_the_timeout(redis_url: str, redis: Redis
                                                                  ) -> None:
    client = bounded(redis_url, 1, timeout=0.3)
    try:
        holder = asyncio.create_task(client.blpop(["bounded:hold"], timeout=30))
        await eventually(lambda: no_free_slot(client), what="the holder's connection")
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        assert 0.25 <= time.monotonic() - started < 10
        await redis.lpush("bounded:hold", "x")  # the holder's pop returns
        assert tuple(await holder) == ("bounded:hold", "x")
        assert await client.ping()  # the slot came back: nothing leaked by the timed-out wait
        assert client.connection_pool._free == 1
    finally:
        await client.aclose()


async def test_cancelled_waiters_leak_no_slot(redis_url: str, redis: Redis) -> None:
    client = bounded(redis_url, 2, timeout=30)
    try:
        holders = [asyncio.create_task(client.blpop([f"bounded:c{i}"], timeout=0.5))
                   for i in range(2)]
        await eventually(lambda: no_free_slot(client), what="both holders' connections")
        waiters = [asyncio.create_task(client.ping()) for _ in range(5)]
        await eventually(lambda: waiting(client, 5), what="five waiters")
        for task in waiters[:4]:
            task.cancel()
        await asyncio.gather(*holders)
        assert await waiters[4]  # the one left got a slot once a holder was done
        for task in waiters[:4]:
            assert task.cancelled()
        assert await asyncio.gather(*(client.ping() for _ in range(20)))
        assert client.connection_pool._free == 2
    finally:
        await client.aclose()
