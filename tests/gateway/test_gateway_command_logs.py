"""A command job's output out of the gateway: SSE ``log`` events beside its events (every line,
in order, the terminal event last; ids that resume both positions), ``GET /jobs/{id}/logs``
pages, and followers that share the gateway's Redis connections. A real gateway (uvicorn) and a
real worker run in this event loop, the command is a real child process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from schemas.status import JobKind
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.consumers.command_support import command_settings, python
from tests.consumers.command_support import submit as submit_job
from tests.gateway.live import Frame, frames, live_gateway, read_events
from tests.gateway.test_gateway_sse import gateway_connections
from tests.support import running_worker

KEY = "s3cret-key"
AUTH = {"X-API-Key": KEY}
KEYS = QueueKeys("diagnostic")
GATEWAY = {"api_key": KEY, "command_worker_types": "diagnostic"}


def printer(lines: int, pause_every: int = 200) -> list[str]:
    """A program printing ``line 00000`` ... in bursts (a short pause every few hundred)."""
    return python("import sys, time\n"
                  f"for i in range({lines}):\n"
                  "    print(f'line {i:05d}')\n"
                  f"    if i % {pause_every} == {pause_every - 1}: time.sleep(0.01)\n"
                  "print('the end', file=sys.stderr)\n")


async def submit(http: httpx.AsyncClient, entrypoint: list[str], **fields: Any) -> str:
    response = await http.post("/jobs/command", json={"entrypoint": entrypoint, **fields})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def log_texts(got: list[Frame], stream: str = "stdout") -> list[str]:
    return [f.json["line"] for f in got if f.event == "log" and f.json["stream"] == stream]


def id_key(frame_id: str) -> tuple[int, ...]:
    return tuple(int(x) for part in frame_id.split(":") for x in part.split("-"))


async def poll_logs(http: httpx.AsyncClient, job_id: str, deadline: float) -> list[str]:
    """Every line through GET /jobs/{id}/logs, page after page, until `finished`."""
    out: list[str] = []
    after = "0-0"
    while time.monotonic() < deadline:
        page = (await http.get(f"/jobs/{job_id}/logs",
                               params={"after": after, "limit": 1000})).json()
        out += [line["line"] for line in page["lines"] if line["stream"] == "stdout"]
        after = page["next"]
        if page["finished"]:
            return out
        if not page["lines"]:
            await asyncio.sleep(0.02)
    raise AssertionError(f"the logs API did not finish: {len(out)} lines read")


@pytest.mark.slow
async def test_ten_thousand_lines_stream_in_order_within_the_cap(
        redis: Redis, redis_url: str, tmp_path: Any) -> None:
    cap = 3000
    settings = command_settings(redis_url, tmp_path, log_max_lines=cap)
    async with live_gateway(redis_url, **GATEWAY) as gw, running_worker(settings), \
            httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=60) as http:
        job_id = await submit(http, printer(10_000))
        deadline = time.monotonic() + 120
        sse = asyncio.create_task(read_events(http, f"/jobs/{job_id}/events"))
        api = asyncio.create_task(poll_logs(http, job_id, deadline))
        (got, ended), from_api = await asyncio.wait_for(asyncio.gather(sse, api), 150)
        kept = await redis.xlen(KEYS.job_logs(job_id))
    expected = [f"line {i:05d}" for i in range(10_000)]
    assert ended and got[-1].event == "succeeded"
    assert log_texts(got) == expected  # every line, in order, over SSE
    assert log_texts(got, "stderr") == ["the end"]
    assert from_api == expected  # and over the logs API
    ids = [id_key(f.id or "") for f in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # ids only grow
    assert all(":" in (f.id or "") for f in got)  # command jobs: <event id>:<log id>
    assert kept < 10_000 and kept <= cap + 200  # MAXLEN ~ trims whole nodes (100 entries)


async def test_resume_with_last_event_id_gives_the_rest_exactly(
        redis_url: str, tmp_path: Any) -> None:
    code = ("import aiq, time\n"
            "for i in range(40):\n"
            "    print(f'line {i}', flush=True)\n"
            "    if i % 10 == 9:\n"
            "        aiq.report(step=i + 1, steps=40)\n"
            "        time.sleep(0.05)\n")
    async with live_gateway(redis_url, **GATEWAY) as gw, \
            running_worker(command_settings(redis_url, tmp_path, progress_interval_s=0)), \
            httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
        job_id = await submit(http, python(code))
        first, ended = await read_events(http, f"/jobs/{job_id}/events", limit=25)
        assert not ended
        rest, ended = await read_events(http, f"/jobs/{job_id}/events",
                                        **{"Last-Event-ID": first[-1].id or ""})
        whole, _ = await read_events(http, f"/jobs/{job_id}/events")  # after the end: replay
    assert ended

    def apart(frames: list[Any]) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """The job's events and its lines, each in its order. Between the two, a live stream
        sends what reaches the gateway first, a replay merges by id (docs/API.md): the same
        two sequences, interleaved differently."""
        return ([(f.event, f.data) for f in frames if f.event != "log"],
                [f.data for f in frames if f.event == "log"])

    assert apart(first + rest) == apart(whole)  # no gap, no duplicate, in either stream
    assert log_texts(whole) == [f"line {i}" for i in range(40)]
    assert [f.event for f in whole].count("progress") >= 1
    assert whole[-1].event == "succeeded"


async def test_many_followers_share_the_gateways_connections(
        redis: Redis, redis_url: str, tmp_path: Any) -> None:
    pool, followers = 4, 50
    async with live_gateway(redis_url, redis_max_connections=pool, **GATEWAY) as gw, \
            running_worker(command_settings(redis_url, tmp_path)), \
            httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=60,
                              limits=httpx.Limits(max_connections=100)) as http:
        job_id = await submit(http, python(  # a pause first: the followers join meanwhile
            "import time\ntime.sleep(1.5)\nfor i in range(2000):\n    print(i)\n"))
        ready = asyncio.Event()
        connected: list[int] = []

        async def follow() -> list[str]:
            async with http.stream("GET", f"/jobs/{job_id}/events") as response:
                stream = frames(response)
                got = [await anext(stream)]
                connected.append(1)
                if len(connected) == followers:
                    ready.set()
                got += [f async for f in stream if f.comment is None]
                return log_texts(got)

        tasks = [asyncio.create_task(follow()) for _ in range(followers)]
        await asyncio.wait_for(ready.wait(), 30)
        during = await gateway_connections(redis)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 90)
        after = await gateway_connections(redis)
    assert all(r == [str(i) for i in range(2000)] for r in results)
    assert max(during["aiq-gateway"], after["aiq-gateway"]) <= pool
    assert during["aiq-gateway-hub"] == 1


async def test_logs_api_pages_and_errors(redis_url: str, tmp_path: Any) -> None:
    async with live_gateway(redis_url, **GATEWAY) as gw, \
            running_worker(command_settings(redis_url, tmp_path)), \
            httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=30) as http:
        job_id = await submit(http, printer(25))
        _, ended = await read_events(http, f"/jobs/{job_id}/events")
        assert ended
        page = (await http.get(f"/jobs/{job_id}/logs", params={"limit": 10})).json()
        rest = (await http.get(f"/jobs/{job_id}/logs",
                               params={"after": page["next"], "limit": 1000})).json()
        bad = await http.get(f"/jobs/{job_id}/logs", params={"after": "yesterday"})
        big = await http.get(f"/jobs/{job_id}/logs", params={"limit": 10_001})
        unknown = await http.get("/jobs/job_00000000-0000-0000-0000-000000000000/logs")
        training = (await http.post("/jobs/training", json={"model_type": "noop"})).json()
        none = (await http.get(f"/jobs/{training['job_id']}/logs")).json()
    assert page["status"] == "succeeded" and len(page["lines"]) == 10
    assert not page["finished"] and rest["finished"]
    texts = [line["line"] for line in page["lines"] + rest["lines"]
             if line["stream"] == "stdout"]
    assert texts == [f"line {i:05d}" for i in range(25)]
    first = page["lines"][0]
    assert first["stream"] == "aiq" and first["job_id"] == job_id and first["ts"] > 0
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "query.after"
    assert big.status_code == 422
    assert unknown.status_code == 404
    assert none["lines"] == [] and none["next"] == "0-0"


async def test_the_log_stream_expires_with_the_jobs_events(
        redis: Redis, redis_url: str, tmp_path: Any) -> None:
    settings = command_settings(redis_url, tmp_path, events_ttl_s=77)
    async with running_worker(settings):
        producer = Producer(redis)
        sub = await submit_job(producer, ["echo", "hi"])
        await producer.wait(sub.job_id, timeout=60)
    ttl = await redis.ttl(KEYS.job_logs(sub.job_id))
    assert 0 < ttl <= 77 and await redis.ttl(KEYS.job_events(sub.job_id)) == ttl
    assert await redis.xlen(KEYS.stream(JobKind.COMMAND)) == 0
