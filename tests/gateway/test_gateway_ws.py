"""``WS /ws`` over real uvicorn with the ``websockets`` client: snapshot then live events,
periodic workers/queues, filters, bounded buffers for slow clients, Redis restarts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from httpx import AsyncClient
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from aiq.redis_server import RedisServer
from gateway.hub import Subscription
from streams.keys import QueueKeys
from tests.gateway.live import LiveGateway, live_gateway
from tests.gateway.payloads import submit
from tests.support import eventually, running_worker, settings_for

DIAG = QueueKeys("diagnostic")
QUIET = {"ws_refresh_s": 3600.0}  # no workers/queues messages in between


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(redis_url: str) -> AsyncIterator[LiveGateway]:
    async with live_gateway(redis_url, **QUIET) as gw:
        yield gw


@pytest_asyncio.fixture(loop_scope="session")
async def http(gateway: LiveGateway) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


async def receive(ws: ClientConnection, *types: str, timeout: float = 10) -> dict[str, Any]:
    """The next message of one of ``types`` (others skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        raw = await _recv(ws, deadline - time.monotonic())
        message: dict[str, Any] = orjson.loads(raw)
        if not types or message["type"] in types:
            return message


async def _recv(ws: ClientConnection, timeout: float) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout=max(timeout, 0.01))


async def next_event(ws: ClientConnection) -> dict[str, Any]:
    event: dict[str, Any] = (await receive(ws, "event"))["event"]
    return event


async def send(ws: ClientConnection, **message: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps(message).decode())
    return await receive(ws, "filter", "error", "snapshot")


# --- snapshot and live ------------------------------------------------------------------------

async def test_snapshot_then_live_updates(redis_url: str, tmp_path: Path) -> None:
    async with live_gateway(redis_url, ws_refresh_s=0.05) as gw, \
            AsyncClient(base_url=gw.url, timeout=10) as http, \
            running_worker(settings_for(redis_url, tmp_path)) as worker:
        await eventually(lambda: _workers(http), what="worker registered")
        earlier = await submit(http)
        async with connect(gw.ws_url) as ws:
            snapshot = await receive(ws)
            assert snapshot["type"] == "snapshot"
            assert len(snapshot["queues"]) == 21  # 7 worker types x (training, inference, command)
            assert [w["worker_id"] for w in snapshot["workers"]] == [worker.name]
            assert earlier in [j["job_id"] for j in snapshot["jobs"]]
            job_id = await submit(http)
            events: list[dict[str, Any]] = []
            while len(events) < 3:
                event = await next_event(ws)
                events += [event] if event["job_id"] == job_id else []
            workers = await receive(ws, "workers")
            queues = await receive(ws, "queues")
    assert [e["type"] for e in events] == ["queued", "started", "succeeded"]
    assert all(e["worker_type"] == "diagnostic" and e["id"] for e in events)
    assert [w["worker_id"] for w in workers["workers"]] == [worker.name]
    assert {q["worker_type"] for q in queues["queues"]} >= {"diagnostic", "sklearn"}


async def _workers(http: AsyncClient) -> bool:
    return bool((await http.get("/workers")).json()["workers"])


async def test_filters(gateway: LiveGateway, http: AsyncClient) -> None:
    async with connect(gateway.ws_url) as ws:
        await receive(ws, "snapshot")
        watched = await submit(http)
        assert (await next_event(ws))["job_id"] == watched  # no filter yet: everything
        ack = await send(ws, type="filter", job_id=watched)
        assert ack == {"type": "filter", "worker_type": None, "job_id": watched}
        other = await submit(http)
        assert (await http.post(f"/jobs/{other}/cancel")).status_code == 200
        assert (await http.post(f"/jobs/{watched}/cancel")).status_code == 200
        event = await next_event(ws)  # the other job's queued and cancelled were filtered out
        assert (event["job_id"], event["type"]) == (watched, "cancelled")

        await send(ws, type="filter", worker_type="sklearn")
        await submit(http)  # diagnostic: filtered out
        r = await http.post("/jobs/training", json={"model_type": "random_forest",
                                                    "data_path": "digits"})
        event = await next_event(ws)
        assert (event["job_id"], event["worker_type"]) == (r.json()["job_id"], "sklearn")

        await send(ws, type="filter", worker_type=None, job_id=None)
        anything = await submit(http)
        assert (await next_event(ws))["job_id"] == anything


@pytest.mark.parametrize(("message", "field"), [
    ({"type": "filter", "worker_type": "nope"}, "filter.worker_type"),
    ({"type": "filter", "job_id": "not-a-job"}, "filter.job_id"),
    ({"type": "subscribe"}, ""),
    ("not json", None),
])
async def test_bad_client_messages_get_an_error(gateway: LiveGateway, message: Any,
                                                field: str | None) -> None:
    async with connect(gateway.ws_url) as ws:
        await receive(ws, "snapshot")
        await ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())
        reply = await receive(ws, "error")
        assert reply["error"]["code"] == "validation_error"
        if field:
            assert reply["error"]["details"][0]["field"] == field
        assert (await send(ws, type="snapshot"))["type"] == "snapshot"  # still connected


# --- slow clients -----------------------------------------------------------------------------

def test_subscription_drops_the_oldest_and_counts() -> None:
    sub: Subscription[int] = Subscription(maxsize=3, max_lag=5)
    for i in range(8):
        sub.put(i)
    assert list(sub.items) == [5, 6, 7] and sub.high_water == 3
    assert (sub.take_dropped(), sub.dropped_total, sub.stale, sub.overrun) == (5, 5, True, False)
    sub.put(8)
    assert not sub.overrun  # the count restarts once the client took its notice
    for i in range(6):
        sub.put(i)
    assert sub.overrun


async def flood(redis: Redis, n: int, size: int, start: int = 0) -> str:
    """``n`` progress events of ``size`` random bytes (hex) on the diagnostic feed, as the
    scripts write them; returns the last feed id."""
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(start, start + n):
            data = orjson.dumps({"message": os.urandom(size).hex(), "step": i}).decode()
            pipe.xadd(DIAG.events, {"type": "progress", "job_id": "job_flood", "ts": i,
                                    "status": "running", "data": data, "event_id": f"1-{i + 1}"})
        ids: list[str] = await pipe.execute()
    return ids[-1]


async def _hub_read(gw: LiveGateway, feed_id: str) -> bool:
    return gw.hub.positions[DIAG.events] == feed_id


async def _flood_until(redis: Redis, gw: LiveGateway, done: Callable[[], bool]) -> int:
    """Add big events, a few at a time (fewer than the buffer holds), until ``done()``; how
    many. The gateway drops only once the client's socket buffers are full."""
    sent = 0
    while not done():
        assert sent < 4000, "the gateway never had to drop anything"
        last = await flood(redis, 4, 16_384, start=sent)
        sent += 4
        await eventually(lambda last=last: _hub_read(gw, last), what="hub read the flood")
    return sent


async def test_a_client_that_never_reads_keeps_the_buffer_bounded(redis: Redis,
                                                                  redis_url: str) -> None:
    async with live_gateway(redis_url, live_buffer_events=20, **QUIET) as gw, \
            connect(gw.ws_url, max_queue=1, compression=None) as ws:
        await receive(ws, "snapshot")
        (sub,) = gw.hub.dashboards
        sent = await _flood_until(redis, gw, lambda: sub.dropped_total > 0)
        assert sub.high_water <= 20 and len(sub.items) <= 20  # never more, however far behind
        events, dropped, last_step = 0, 0, -1
        while events + dropped < sent:  # now read everything: nothing vanishes silently
            message = await receive(ws, "event", "lagged")
            if message["type"] == "lagged":
                dropped += message["dropped"]
            else:
                events += 1
                last_step = message["event"]["step"]
    assert dropped == sub.dropped_total > 0
    assert last_step == sent - 1  # the newest are kept, the oldest dropped


async def test_a_client_too_far_behind_is_closed_with_1013(redis: Redis, redis_url: str) -> None:
    async with live_gateway(redis_url, live_buffer_events=5, ws_max_lag=20, **QUIET) as gw, \
            connect(gw.ws_url, max_queue=1, compression=None) as ws:
        await receive(ws, "snapshot")
        (sub,) = gw.hub.dashboards
        await _flood_until(redis, gw, lambda: sub.overrun)
        assert sub.high_water <= 5
        assert gw.hub.dashboards == ()  # cut off: the hub holds nothing for it any more
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_closing_the_hub_closes_dashboards_with_1001(gateway: LiveGateway) -> None:
    async with connect(gateway.ws_url) as ws:
        await receive(ws, "snapshot")
        gateway.hub.close_clients()
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


# --- Redis restarts ---------------------------------------------------------------------------

async def test_the_feed_survives_a_redis_restart(gateway: LiveGateway, http: AsyncClient,
                                                 redis_server: RedisServer) -> None:
    async with connect(gateway.ws_url) as ws:
        await receive(ws, "snapshot")
        redis_server.restart()
        job_id = await submit(http)
        event = await next_event(ws)
    assert (event["job_id"], event["type"]) == (job_id, "queued")
    await eventually(lambda: _connected(gateway), what="hub reconnected")


async def test_redis_down_at_connect_closes_with_1013(gateway: LiveGateway,
                                                      redis_server: RedisServer) -> None:
    redis_server.stop()
    try:
        async with connect(gateway.ws_url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
    finally:
        redis_server.start()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def _connected(gw: LiveGateway) -> bool:
    return gw.hub.connected


# --- origins ----------------------------------------------------------------------------------

async def test_only_allowed_origins_may_open_the_dashboard_feed(redis_url: str) -> None:
    """Any web page the operator opened could read the whole feed: a browser's WebSocket now
    opens only from the gateway's own origin or one of ALLOWED_ORIGINS; clients that send no
    Origin (scripts, the CLI) are not browsers and may connect."""
    async with live_gateway(redis_url, allowed_origins="https://dash.example.com/") as gw:
        own = gw.url  # http://127.0.0.1:<port>
        for origin in (None, own, "https://dash.example.com"):
            async with connect(gw.ws_url, origin=origin) as ws:  # type: ignore[arg-type]
                assert (await receive(ws))["type"] == "snapshot", origin
        for origin in ("https://evil.example", own.replace("127.0.0.1", "localhost"),
                       "http://127.0.0.1:1"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(gw.ws_url, origin=origin):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403, origin
            error = orjson.loads(refused.value.response.body)["error"]
            assert error["code"] == "origin_not_allowed", origin
    async with live_gateway(redis_url, allowed_origins="*") as gw, \
            connect(gw.ws_url, origin="https://anywhere.example") as ws:  # type: ignore[arg-type]
        assert (await receive(ws))["type"] == "snapshot"
