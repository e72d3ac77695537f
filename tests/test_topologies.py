"""The core behaviours on every Redis topology: one Redis, a Sentinel master, a Redis Cluster.

Each test runs once per topology (``single``, ``sentinel``, ``cluster``) against real servers
(tests/conftest.py starts a 3-master cluster with a replica each, and a master + replica + three
sentinels). A module-scoped stack per topology: the real gateway under uvicorn (its hub reads
the feeds per hash slot on the cluster) and a diagnostic worker in this event loop; the reclaim
test adds a worker process of its own and SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from httpx import AsyncClient
from websockets.asyncio.client import connect

from consumers.runtime import Worker
from schemas.status import JobKind
from streams.connection import connect as redis_client
from streams.keys import QueueKeys
from tests.conftest import TOPOLOGIES, topology_url
from tests.consumers.command_support import command_settings, python
from tests.gateway.live import LiveGateway, live_gateway, read_events
from tests.gateway.payloads import in_status, submit
from tests.support import eventually, running_worker, settings_for, spawn_worker

pytestmark = pytest.mark.timeout(240)


@dataclass
class Stack:
    topology: str
    url: str  # Redis
    gateway: LiveGateway
    http: AsyncClient
    worker: Worker
    tmp: Path


@pytest_asyncio.fixture(loop_scope="session", scope="module", params=TOPOLOGIES)
async def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[Stack]:
    url = topology_url(request, request.param)
    tmp = tmp_path_factory.mktemp(f"topology-{request.param}")
    async with live_gateway(url, ws_refresh_s=0.2) as gw, \
            AsyncClient(base_url=gw.url, timeout=30) as http, \
            running_worker(settings_for(url, tmp, max_concurrent_jobs=4)) as worker:
        await eventually(lambda: _has_worker(http, worker.name), timeout=30,
                         what="worker registered")
        yield Stack(request.param, url, gw, http, worker, tmp)


async def _has_worker(http: AsyncClient, name: str) -> bool:
    r = await http.get("/workers")
    return r.status_code == 200 and name in [w["worker_id"] for w in r.json()["workers"]]


async def _done(http: AsyncClient, job_id: str, *wanted: str, timeout: float = 60
                ) -> dict[str, Any]:
    view: dict[str, Any] = await eventually(in_status(http, job_id, *wanted), timeout=timeout,
                                            what=f"{job_id} {wanted}")
    return view


async def test_submit_run_and_sse_live_then_replay(stack: Stack) -> None:
    job_id = await submit(stack.http, "sleep", seconds=0.3, steps=3)
    live, ended = await read_events(stack.http, f"/jobs/{job_id}/events")
    types = [f.event for f in live]
    assert ended and types[0] == "queued" and types[-1] == "succeeded", types
    assert "started" in types and "progress" in types
    # Resume from the middle: exactly what followed, by stream id
    middle = live[len(live) // 2]
    rest, ended = await read_events(stack.http, f"/jobs/{job_id}/events",
                                    **{"Last-Event-ID": str(middle.id)})
    assert ended and [f.id for f in rest] == [f.id for f in live[len(live) // 2 + 1:]]
    view = (await stack.http.get(f"/jobs/{job_id}")).json()
    assert view["status"] == "succeeded" and view["result"]["steps"] == 3


async def test_dashboard_feed(stack: Stack) -> None:
    async with connect(stack.gateway.ws_url) as ws:
        snapshot = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        assert snapshot["type"] == "snapshot"
        assert stack.worker.name in [w["worker_id"] for w in snapshot["workers"]]
        job_id = await submit(stack.http)
        seen: list[str] = []
        while "succeeded" not in seen:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "event" and message["event"]["job_id"] == job_id:
                seen.append(message["event"]["type"])
    assert seen == ["queued", "started", "succeeded"]


async def test_cancel_queued_and_running(stack: Stack) -> None:
    running = await submit(stack.http, "sleep", seconds=30, steps=300)
    await _done(stack.http, running, "running")
    r = await stack.http.post(f"/jobs/{running}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelling"
    assert (await _done(stack.http, running, "cancelled", "succeeded"))["status"] == "cancelled"
    # A queued job: a request for a model type no worker serves here stays queued
    r = await stack.http.post("/jobs/training", json={"model_type": "random_forest",
                                                      "data_path": "digits"})
    queued = r.json()["job_id"]
    r = await stack.http.post(f"/jobs/{queued}/cancel")
    assert r.json() == {"job_id": queued, "status": "cancelled"}


async def test_retry_with_backoff(stack: Stack) -> None:
    job_id = await submit(stack.http, "fail", fail_times=2, error="retryable")
    view = await _done(stack.http, job_id, "succeeded", "failed")
    assert view["status"] == "succeeded"
    record = (await stack.http.get(f"/jobs/{job_id}")).json()
    assert record["attempt"] == 3 and record["result"]["attempt"] == 3


async def test_idempotent_submit(stack: Stack) -> None:
    body = {"model_type": "noop", "hyperparameters": {"epochs": 2}}
    headers = {"Idempotency-Key": f"topology-{stack.topology}"}
    first = await stack.http.post("/jobs/training", json=body, headers=headers)
    again = await stack.http.post("/jobs/training", json=body, headers=headers)
    assert first.status_code == 202 and again.status_code in (200, 202)
    assert again.json()["job_id"] == first.json()["job_id"]
    other = await stack.http.post("/jobs/training", json={**body, "description": "x"},
                                  headers=headers)
    assert other.status_code == 409


async def test_batch_submit_over_several_slots(stack: Stack) -> None:
    """Three worker types, so three hash slots (on the cluster, masters): every slot is checked
    before any is written, a retry answers the same jobs, a conflict in one slot writes none."""
    tag = f"batch-{stack.topology}"
    bodies = [{"model_type": "noop", "idempotency_key": f"{tag}-0"},
              {"model_type": "random_forest", "data_path": "builtin:digits",
               "idempotency_key": f"{tag}-1"},
              {"model_type": "bert", "data_path": "/data/s.csv", "idempotency_key": f"{tag}-2"}]
    first = await stack.http.post("/jobs/training/batch", json={"jobs": bodies})
    assert first.status_code == 202, first.text
    assert [j["worker_type"] for j in first.json()["jobs"]] == ["diagnostic", "sklearn",
                                                                "pytorch-2.1"]
    again = await stack.http.post("/jobs/training/batch", json={"jobs": bodies})
    assert again.status_code == 200
    assert again.json()["jobs"] == [{**j, "duplicate": True, "status": again.json()["jobs"][i][
        "status"]} for i, j in enumerate(first.json()["jobs"])]
    redis = redis_client(stack.url)
    try:
        streams = [QueueKeys(t).stream(JobKind.TRAINING) for t in ("sklearn", "pytorch-2.1")]
        before = [await redis.xlen(s) for s in streams]
        conflict = [{"model_type": "random_forest", "data_path": "builtin:digits"},
                    {"model_type": "bert", "data_path": "/data/s.csv"},
                    {**bodies[0], "description": "another job"}]
        r = await stack.http.post("/jobs/training/batch", json={"jobs": conflict})
        assert r.status_code == 409, r.text
        assert [d["field"] for d in r.json()["error"]["details"]] == \
            ["body.jobs[2].idempotency_key"]
        assert [await redis.xlen(s) for s in streams] == before
    finally:
        await redis.aclose()


async def test_queues_and_workers(stack: Stack) -> None:
    queues = (await stack.http.get("/queues")).json()
    diag = [q for q in queues if q["worker_type"] == "diagnostic"]
    assert {q["kind"] for q in diag} == {"training", "inference", "command"}
    assert all(q["consumers"] >= 1 for q in diag if q["kind"] == "training")
    workers = (await stack.http.get("/workers")).json()["workers"]
    mine = next(w for w in workers if w["worker_id"] == stack.worker.name)
    assert mine["worker_type"] == "diagnostic" and mine["max_concurrent_jobs"] == 4
    health = (await stack.http.get("/health")).json()
    assert health["status"] == "ok" and health["redis_version"]


async def test_a_type_announced_by_a_worker_is_learned_and_followed(stack: Stack) -> None:
    """A declaration announced in Redis (another slot than the set of names, on a cluster) is
    read by the gateway before it refuses the type; the hub then follows the type's feed (its
    own reader per slot on a cluster): a job of it runs and its events arrive over SSE."""
    from schemas.catalogue import STATE
    from streams import registry
    from streams.consumer import QueueConsumer
    from streams.endings import Complete
    from streams.limits import StreamLimits
    from tests.gateway.test_gateway_plugins import BODY, KEYS, TEAM

    redis = redis_client(stack.url)
    try:
        await registry.announce(redis, KEYS, TEAM, "w1", force=True)
        assert await registry.announce(redis, KEYS, TEAM, "w1") is False
        r = await stack.http.post("/jobs/training", json=BODY)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        reading = asyncio.create_task(read_events(stack.http, f"/jobs/{job_id}/events"))
        worker = QueueConsumer(redis, KEYS, "w1", StreamLimits(), 5)
        await worker.ensure_groups()
        [d] = await worker.read(redis, 1, 1000)
        await worker.start([d])
        assert await worker.write_endings([Complete.of(d, {"ok": True})]) == [None]
        got, ended = await asyncio.wait_for(reading, timeout=60)
        assert ended and got[-1].event == "succeeded"
    finally:  # retired: the module's gateway (it lives on) and this process forget it
        await redis.delete(KEYS.declaration)
        await redis.srem("ai:worker_types", KEYS.worker_type)
        for _ in range(2):  # the second read starts after any read in flight before the DEL
            await stack.gateway.app.state.catalogue.refresh()
        STATE.learn([])
        await redis.aclose()


async def test_reclaim_after_sigkill(stack: Stack) -> None:
    """A worker process of a queue of its own is SIGKILLed mid-job; another worker reclaims the
    entry once the lease runs out and runs the job to its end, once."""
    prefix = "reclaim"
    settings = settings_for(stack.url, stack.tmp, redis_prefix=prefix)
    victim = spawn_worker(settings, stack.tmp / f"victim-{stack.topology}.log")
    async with live_gateway(stack.url, redis_prefix=prefix) as gw, \
            AsyncClient(base_url=gw.url, timeout=30) as http:
        job_id = await submit(http, "sleep", seconds=3, steps=30)
        await _done(http, job_id, "running", timeout=60)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        async with running_worker(settings):
            view = await _done(http, job_id, "succeeded", "failed", timeout=90)
        record = (await http.get(f"/jobs/{job_id}")).json()
        events, _ = await read_events(http, f"/jobs/{job_id}/events")
    assert view["status"] == "succeeded"
    assert record["deliveries"] >= 2 or record["attempt"] >= 2
    assert [f.event for f in events].count("succeeded") == 1


async def test_a_command_job_and_its_log(stack: Stack) -> None:
    """A command job on each topology: its worker's append_log and final write (which expires
    the log) are one-slot scripts, and the hub reads each batch of lines from the job's log
    stream (on the cluster, on that slot's node) for its SSE followers. The stack's own worker,
    without COMMAND_JOBS, leaves the job alone."""
    tmp = stack.tmp / "command"
    tmp.mkdir(exist_ok=True)
    key = "topology-key-1"
    async with live_gateway(stack.url, api_key=key, command_worker_types="diagnostic") as gw, \
            AsyncClient(base_url=gw.url, timeout=30, headers={"X-API-Key": key}) as http, \
            running_worker(command_settings(stack.url, tmp)) as worker:
        r = await http.post("/jobs/command", json={"entrypoint": python(
            "for i in range(300):\n    print(i)\n")})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        got, ended = await read_events(http, f"/jobs/{job_id}/events")
        view = (await http.get(f"/jobs/{job_id}")).json()
    assert ended and got[-1].event == "succeeded" and view["worker"] == worker.name
    assert [f.json["line"] for f in got if f.event == "log" and f.json["stream"] == "stdout"
            ] == [str(i) for i in range(300)]
