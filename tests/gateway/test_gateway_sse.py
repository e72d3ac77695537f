"""``GET /jobs/{id}/events`` over real HTTP (uvicorn) with a real worker: order, completeness,
resuming by ``Last-Event-ID``, the end of the stream, heartbeats, 404 before streaming, one
Redis reader for many clients, and recovery when the hub loses events or Redis restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from httpx import AsyncClient
from redis.asyncio import Redis

from aiq.redis_server import RedisServer
from gateway.app import REDIS_CLIENT_NAME
from gateway.hub import HUB_CLIENT_NAME, HubEvent
from schemas.events import parse_event
from streams.events import parse_id
from streams.keys import QueueKeys
from tests.gateway.live import Frame, LiveGateway, frames, live_gateway, read_events
from tests.gateway.payloads import submit
from tests.support import eventually, running_worker, settings_for

DIAG = QueueKeys("diagnostic")
UNKNOWN = "job_12345678-1234-1234-1234-123456789012"
SLEEP = {"seconds": 0.3, "steps": 3, "epochs": 2}  # 6 progress events


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(redis_url: str) -> AsyncIterator[LiveGateway]:
    async with live_gateway(redis_url) as gw:
        yield gw


@pytest_asyncio.fixture(loop_scope="session")
async def http(gateway: LiveGateway) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


async def stored_ids(redis: Redis, job_id: str) -> list[str]:
    """The ids of the job's events: its stream's, after the queued event's 0-1 (the queued
    event lives in the type's feed and the record, not in the job's stream)."""
    return ["0-1", *[entry_id for entry_id, _ in await redis.xrange(DIAG.job_events(job_id))]]


def check_frames(got: list[Frame], job_id: str) -> None:
    """Each frame is its stored event: id, event type and data agree."""
    for frame in got:
        data = frame.json
        assert data["id"] == frame.id and data["type"] == frame.event
        assert data["job_id"] == job_id


async def test_history_then_live_in_order(gateway: LiveGateway, http: AsyncClient,
                                          redis: Redis, redis_url: str, tmp_path: Path) -> None:
    job_id = await submit(http, "sleep", **SLEEP)
    got: list[Frame] = []
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.headers["cache-control"] == "no-cache"
        stream = frames(response)
        got.append(await anext(stream))  # history: the job is queued, no worker yet
        async with running_worker(settings_for(redis_url, tmp_path)):
            got += [f async for f in stream if f.comment is None]  # live, until it ends
    types = [f.event for f in got]
    assert types == ["queued", "started", *["progress"] * 6, "succeeded"]
    assert [f.id for f in got] == await stored_ids(redis, job_id)
    ids = [parse_id(f.id or "") for f in got]
    assert ids == sorted(set(ids))  # strictly increasing
    percents = [f.json["percent"] for f in got if f.event == "progress"]
    assert percents == sorted(percents) and percents[-1] == 100
    assert [(f.json["epoch"], f.json["step"]) for f in got[2:-1]] == [
        (e, s) for e in (1, 2) for s in (1, 2, 3)]
    check_frames(got, job_id)
    assert got[-1].json["result"]["steps"] == 6


@pytest.mark.parametrize("via", ["header", "query"])
async def test_resume_after_a_dropped_connection(gateway: LiveGateway, http: AsyncClient,
                                                 redis: Redis, redis_url: str, tmp_path: Path,
                                                 via: str) -> None:
    async with running_worker(settings_for(redis_url, tmp_path)):
        job_id = await submit(http, "sleep", seconds=0.4, steps=8)
        first, ended = await read_events(http, f"/jobs/{job_id}/events", limit=3)
        assert not ended
        last = first[-1].id or ""
        url, headers = f"/jobs/{job_id}/events", {"Last-Event-ID": last}
        if via == "query":
            url, headers = f"{url}?last_event_id={last}", {}
        rest, ended = await read_events(http, url, **headers)
    assert ended and rest[-1].event == "succeeded"
    ids = [f.id for f in first + rest]
    assert ids == await stored_ids(redis, job_id)  # nothing lost, nothing twice
    check_frames(first + rest, job_id)
    # Resuming after the terminal event: the stream ends at once, empty.
    after_end, ended = await read_events(http, f"/jobs/{job_id}/events",
                                         **{"Last-Event-ID": ids[-1] or ""})
    assert (after_end, ended) == ([], True)


async def test_header_wins_over_query(gateway: LiveGateway, http: AsyncClient,
                                      redis: Redis) -> None:
    """A browser's EventSource reconnects to the same URL with a newer Last-Event-ID."""
    job_id = await submit(http)
    assert (await http.post(f"/jobs/{job_id}/cancel")).status_code == 200
    queued, cancelled = await stored_ids(redis, job_id)
    got, _ = await read_events(http, f"/jobs/{job_id}/events?last_event_id=0-0",
                               **{"Last-Event-ID": queued})
    assert [f.id for f in got] == [cancelled]


@pytest.mark.parametrize("ending", ["cancelled", "failed"])
async def test_terminal_event_ends_the_stream(gateway: LiveGateway, http: AsyncClient,
                                              redis_url: str, tmp_path: Path,
                                              ending: str) -> None:
    job_id = await submit(http, "fail" if ending == "failed" else "noop")
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        stream = frames(response)
        assert (await anext(stream)).event == "queued"
        if ending == "cancelled":
            assert (await http.post(f"/jobs/{job_id}/cancel")).status_code == 200
            rest = [f async for f in stream if f.comment is None]
        else:
            async with running_worker(settings_for(redis_url, tmp_path)):
                rest = [f async for f in stream if f.comment is None]
    assert rest[-1].event == ending
    assert rest[-1].json["status"] == ending
    if ending == "failed":
        assert rest[-1].json["error"]["code"] == "diagnostic"


@pytest.mark.parametrize("job_id", [UNKNOWN, "job_nope"])
async def test_unknown_job_is_404_before_streaming(client: AsyncClient, job_id: str) -> None:
    r = await client.get(f"/jobs/{job_id}/events")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "job_not_found"


@pytest.mark.parametrize("bad", ["abc", "1-2-3", "-1", "1-"])
async def test_malformed_last_event_id_is_422(client: AsyncClient, bad: str) -> None:
    job_id = await submit(client)
    for r in (await client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": bad}),
              await client.get(f"/jobs/{job_id}/events", params={"last_event_id": bad})):
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_error"


async def test_redis_down_is_503_before_streaming(gateway: LiveGateway, http: AsyncClient,
                                                   redis_server: RedisServer) -> None:
    job_id = await submit(http)
    redis_server.stop()
    try:
        r = await http.get(f"/jobs/{job_id}/events")
    finally:
        redis_server.start()
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "redis_unavailable"


async def test_heartbeat_when_idle(redis_url: str) -> None:
    async with live_gateway(redis_url, sse_heartbeat_s=0.05) as gw, \
            AsyncClient(base_url=gw.url, timeout=10) as http:
        job_id = await submit(http)  # stays queued: no worker
        async with http.stream("GET", f"/jobs/{job_id}/events") as response:
            stream = frames(response)
            assert (await anext(stream)).event == "queued"
            pings = [await anext(stream) for _ in range(3)]
    assert all(p.comment == "ping" and p.id is None for p in pings)


async def gateway_connections(redis: Redis) -> dict[str, int]:
    counts = {REDIS_CLIENT_NAME: 0, HUB_CLIENT_NAME: 0}
    for info in await redis.client_list():
        if info.get("name") in counts:
            counts[info["name"]] += 1
    return counts


async def test_many_clients_share_the_gateways_redis_connections(redis: Redis,
                                                                 redis_url: str) -> None:
    pool = 4
    async with live_gateway(redis_url, redis_max_connections=pool) as gw, \
            AsyncClient(base_url=gw.url, timeout=20,
                        limits=httpx.Limits(max_connections=100)) as http:
        job_id = await submit(http)
        before = await gateway_connections(redis)
        queued = asyncio.Event()
        seen: list[int] = []

        async def follow() -> list[str | None]:
            async with http.stream("GET", f"/jobs/{job_id}/events") as response:
                stream = frames(response)
                got = [(await anext(stream)).event]
                seen.append(1)
                if len(seen) == 50:
                    queued.set()
                return got + [f.event async for f in stream if f.comment is None]

        followers = [asyncio.create_task(follow()) for _ in range(50)]
        await asyncio.wait_for(queued.wait(), timeout=15)
        during = await gateway_connections(redis)
        assert gw.hub.job_subscriber_count() == 50
        assert (await http.post(f"/jobs/{job_id}/cancel")).status_code == 200
        results = await asyncio.wait_for(asyncio.gather(*followers), timeout=15)
        after = await gateway_connections(redis)
    assert all(r == ["queued", "cancelled"] for r in results)
    assert before[HUB_CLIENT_NAME] == during[HUB_CLIENT_NAME] == after[HUB_CLIENT_NAME] == 1
    assert max(before[REDIS_CLIENT_NAME], during[REDIS_CLIENT_NAME],
               after[REDIS_CLIENT_NAME]) <= pool  # 50 streams, no connection each
    assert gw.hub.job_subscriber_count() == 0


async def test_events_lost_by_the_hub_are_recovered_from_the_job_stream(
        redis: Redis, redis_url: str) -> None:
    """A client whose buffer overflowed re-reads the job's stream after the last id it sent."""
    async with live_gateway(redis_url, live_buffer_events=1) as gw, \
            AsyncClient(base_url=gw.url, timeout=10) as http:
        job_id = await submit(http)
        async with http.stream("GET", f"/jobs/{job_id}/events") as response:
            stream = frames(response)
            assert (await anext(stream)).event == "queued"
            (sub,) = gw.hub._subs.jobs[job_id]
            gw.hub.unsubscribe(sub)  # the hub will not deliver the next event to this client
            assert (await http.post(f"/jobs/{job_id}/cancel")).status_code == 200
            last = (await redis.xrevrange(DIAG.events, count=1))[0][0]
            await eventually(lambda: _passed(gw, last), what="hub read the cancel")
            gw.hub._subs.jobs[job_id] = {sub}
            old = HubEvent("diagnostic", parse_event("0-1", {
                "type": "queued", "job_id": job_id, "ts": "1", "status": "queued"}))
            sub.put(old)
            sub.put(old)  # overflow: the oldest is dropped, the client is marked stale
            rest = [f async for f in stream if f.comment is None]
    assert [f.event for f in rest] == ["cancelled"]  # recovered; the stale item skipped


async def _passed(gw: LiveGateway, feed_id: str) -> bool:
    return not parse_id(gw.hub.positions[DIAG.events]) < parse_id(feed_id)


async def test_stream_survives_a_redis_restart(gateway: LiveGateway, http: AsyncClient,
                                               redis_server: RedisServer) -> None:
    job_id = await submit(http)
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        stream = frames(response)
        assert (await anext(stream)).event == "queued"
        redis_server.restart()
        r = await http.post(f"/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
        rest = [f async for f in stream if f.comment is None]
    assert [f.event for f in rest] == ["cancelled"]
    await eventually(lambda: _connected(gateway), what="hub reconnected")


async def _connected(gw: LiveGateway) -> bool:
    return gw.hub.connected


async def test_closing_the_hub_ends_open_streams(gateway: LiveGateway,
                                                 http: AsyncClient) -> None:
    """On shutdown the server must not wait for endless streams: they end cleanly."""
    job_id = await submit(http)
    async with http.stream("GET", f"/jobs/{job_id}/events") as response:
        stream = frames(response)
        assert (await anext(stream)).event == "queued"
        gateway.hub.close_clients()
        rest = [f async for f in stream]  # the chunked body completes: no error
    assert rest == []
    assert gateway.hub.job_subscriber_count() == 0


MAX_ID = "18446744073709551615-18446744073709551615"


@pytest.mark.parametrize("bad", ["99999999999999999999", "18446744073709551616-0",
                                 "0-18446744073709551616"])
@pytest.mark.parametrize("via", ["header", "query"])
async def test_an_id_beyond_64_bits_is_422(gateway: LiveGateway, http: AsyncClient, bad: str,
                                           via: str) -> None:
    """Both parts of a stream id are 64-bit: a bigger Last-Event-ID was a Redis error (500)."""
    job_id = await submit(http)
    url, headers = f"/jobs/{job_id}/events", {"Last-Event-ID": bad}
    if via == "query":
        url, headers = f"{url}?last_event_id={bad}", {}
    r = await http.get(url, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and "at most 18446744073709551615" in r.text
    assert {d["field"] for d in error["details"]} <= {"header.Last-Event-ID",
                                                     "query.last_event_id"}


async def test_resuming_beyond_the_last_id_still_ends_with_the_job(
        gateway: LiveGateway, http: AsyncClient, redis_url: str, tmp_path: Path) -> None:
    """Resumed from an id past every event (the largest one, or one of another stream), the
    stream sends nothing old and still ends when the job does, though its terminal event's id
    is not after the one given; it used to wait forever."""
    job_id = await submit(http, "sleep", seconds=0.3, steps=3)

    async def follow(last: str) -> tuple[list[Frame], bool]:
        return await read_events(http, f"/jobs/{job_id}/events", **{"Last-Event-ID": last})

    readers = [asyncio.create_task(follow(last)) for last in (MAX_ID, "9999999999999-0")]

    async def both_subscribed() -> bool:
        return gateway.hub.job_subscriber_count() >= 2

    await eventually(both_subscribed, what="both streams following the job live")
    async with running_worker(settings_for(redis_url, tmp_path)):
        results = await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
    assert results == [([], True), ([], True)]
    assert await follow(MAX_ID) == ([], True)  # and at once for a finished job


async def test_a_large_result_stays_out_of_the_type_feed_and_still_reaches_sse(
        gateway: LiveGateway, http: AsyncClient, redis: Redis) -> None:
    """The type-wide feed is capped by count: a 15 KB result per event could keep GBs there.
    Data over 4 KB goes to the feed as {} (truncated), the job's own stream keeps it whole,
    and an SSE client following the job live still gets the whole result."""
    from streams.consumer import QueueConsumer
    from streams.endings import Complete
    from streams.limits import StreamLimits

    keys = QueueKeys("diagnostic")
    job_id = await submit(http)
    worker = QueueConsumer(redis, keys, "w", StreamLimits())
    [d] = await worker.read(redis, 1, 100)
    await worker.start([d])
    follower = asyncio.create_task(read_events(http, f"/jobs/{job_id}/events"))

    async def following() -> bool:
        return gateway.hub.job_subscriber_count() >= 1

    await eventually(following, what="the SSE stream following the job")
    blob = "x" * 20_000
    assert await worker.write_endings([Complete.of(d, {"blob": blob})]) == [None]
    got, ended = await asyncio.wait_for(follower, timeout=30)
    assert ended and got[-1].event == "succeeded" and got[-1].json["result"]["blob"] == blob
    [(_, feed)] = [e for e in await redis.xrange(keys.events) if e[1]["type"] == "succeeded"]
    assert feed["truncated"] == "1" and feed["data"] == "{}"
    own = [f for _, f in await redis.xrange(keys.job_events(job_id)) if f["type"] == "succeeded"]
    assert len(own[0]["data"]) > 20_000


async def test_replay_of_a_queued_job_and_of_one_whose_events_expired(redis_url: str,
                                                                    redis: Redis) -> None:
    """A queued job has no events stream: its replay is its queued event (id 0-1, rebuilt from
    the record). Once a finished job's events expired (EVENTS_TTL_S), its replay is the queued
    event and then the final one under its own id, with the result or error; a client that saw
    the final event gets an empty stream."""
    async with live_gateway(redis_url, events_ttl_s=1) as gw, \
            AsyncClient(base_url=gw.url, timeout=10) as client:
        job_id = await submit(client)
        got, _ = await read_events(client, f"/jobs/{job_id}/events", limit=1)
        assert [(f.id, f.event, f.json["position"]) for f in got] == [("0-1", "queued", 1)]
        assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
        [final_id] = [i for i, _ in await redis.xrange(DIAG.job_events(job_id))]

        async def expired() -> bool:
            return not await redis.exists(DIAG.job_events(job_id))
        await eventually(expired, timeout=30, what="the job's events expired")
        got, ended = await read_events(client, f"/jobs/{job_id}/events")
        assert ended and [(f.id, f.event) for f in got] == [("0-1", "queued"),
                                                           (final_id, "cancelled")]
        check_frames(got, job_id)
        got, ended = await read_events(client, f"/jobs/{job_id}/events",
                                       **{"Last-Event-ID": final_id})
        assert ended and got == []
