"""What a round trip costs the client's event loop, and that its bounds still hold: a command
takes two turns of the loop (redis-py's ``wait_for`` on each write made it five), a single
script call no pipeline (three turns more), and a write that cannot finish still times out and
closes its connection."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aiq.redis_server import RedisServer
from streams import scripts
from streams.connection import client

ROUNDS = 200


@contextlib.contextmanager
def loop_turns(loop: asyncio.AbstractEventLoop) -> Iterator[list[int]]:
    """Counts the event loop's turns (``_run_once``, CPython's base event loop) meanwhile."""
    turns = [0]
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counted() -> None:
        turns[0] += 1
        run_once()

    loop._run_once = counted  # type: ignore[attr-defined]
    try:
        yield turns
    finally:
        del loop._run_once  # type: ignore[attr-defined]


async def test_a_command_takes_two_turns_of_the_loop(redis_url: str) -> None:
    redis = client(redis_url)  # redis-py's default socket_timeout (5 s) bounds every write
    try:
        assert await redis.ping()
        with loop_turns(asyncio.get_running_loop()) as turns:
            for _ in range(ROUNDS):
                await redis.ping()
        assert turns[0] <= 2.2 * ROUNDS, turns[0] / ROUNDS  # send, then the reply
    finally:
        await redis.aclose()


async def test_a_single_script_call_goes_without_a_pipeline(redis_url: str) -> None:
    redis = client(redis_url)
    call: tuple[scripts.Script, list[str], list[Any]] = (
        scripts.Script("echo", "return ARGV[1]", _sha("return ARGV[1]")), [], ["x"])
    try:
        assert await scripts.execute(redis, [call]) == ["x"]  # loaded at its NOSCRIPT
        with loop_turns(asyncio.get_running_loop()) as turns:
            for _ in range(ROUNDS):
                assert await scripts.execute(redis, [call]) == ["x"]
        assert turns[0] <= 2.2 * ROUNDS, turns[0] / ROUNDS
        await redis.script_flush()
        assert await scripts.execute(redis, [call]) == ["x"]  # reloaded after a flush
        # An error comes back in place, as a pipeline's does; so do two calls.
        bad = (scripts.Script("bad", "return redis.call('NOPE')", _sha(
            "return redis.call('NOPE')")), [], [])
        [err] = await scripts.execute(redis, [bad])
        assert isinstance(err, ResponseError)
        ok, err2 = await scripts.execute(redis, [call, bad])
        assert ok == "x" and isinstance(err2, ResponseError)
    finally:
        await redis.aclose()


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@pytest.fixture
def stoppable_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own (it is stopped with SIGSTOP, so not the session's)."""
    with RedisServer(appendonly=False, die_with_parent=True) as server:
        yield server


async def test_a_write_that_cannot_finish_times_out_and_closes_its_connection(
        stoppable_redis: RedisServer) -> None:
    redis: Redis = client(stoppable_redis.url, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    pid = stoppable_redis.pid
    assert pid is not None
    try:
        assert await redis.ping()
        os.kill(pid, signal.SIGSTOP)  # reads nothing more: the socket's buffers fill up
        try:
            with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
                await asyncio.wait_for(redis.set("big", "x" * (64 << 20)), 60)
        finally:
            os.kill(pid, signal.SIGCONT)
        # The half-written command's connection was closed: the next one is whole.
        assert await asyncio.wait_for(redis.ping(), 30)
        await redis.set("small", "1")
        assert await redis.get("small") == "1"
    finally:
        await redis.aclose()
