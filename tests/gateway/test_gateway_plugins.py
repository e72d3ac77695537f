"""The gateway's model types come from plugins: its installed ones and those workers announce in
Redis, learned on a timer and once more before refusing; declared parameter bounds are checked
at submit. (tests/test_plugin_example.py runs a real plugin worker end to end.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from schemas.catalogue import STATE
from schemas.plugins import LoadedPlugin, Parameter
from streams import registry
from streams.consumer import QueueConsumer
from streams.endings import Complete
from streams.keys import QueueKeys
from streams.limits import StreamLimits
from tests.gateway.conftest import ClientFactory
from tests.gateway.live import live_gateway, read_events
from tests.schemas.test_plugins import plugin
from tests.support import eventually

TEAM = LoadedPlugin("team", "team-plugin 1.0", plugin(gpu=True, parameters=(
    Parameter(name="depth", type="int", ge=1, le=8, default=2),
    Parameter(name="mode", type="str", choices=("fast", "exact"), default="fast"))))
KEYS = QueueKeys("team-cpu")
BODY = {"model_type": "team_model", "data_path": "d.csv"}


@pytest.fixture(autouse=True)
def _forget_announced() -> Iterator[None]:
    """The catalogue is this process's: what a test's gateway learned goes with the test."""
    yield
    STATE.learn([])


def _fields(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    return {d["field"]: d["message"] for d in r.json()["error"]["details"]}


async def test_declared_bounds_are_checked_at_submit(client: AsyncClient, redis: Redis) -> None:
    body = {"model_type": "random_forest", "data_path": "d.csv",
            "hyperparameters": {"n_estimators": 0, "max_depth": None, "n_jobs": -1}}
    fields = _fields(await client.post("/jobs/training", json=body))
    assert fields == {"body.hyperparameters.n_estimators":
                      "should be an integer between 1 and 5000 for model type random_forest"}
    ok = {**body, "hyperparameters": {"n_estimators": 10, "kernel_extra": "passes through"}}
    fields = _fields(await client.post("/jobs/training/batch", json={"jobs": [ok, body]}))
    assert list(fields) == ["body.jobs[1].hyperparameters.n_estimators"]
    assert await redis.dbsize() == 0  # nothing written
    svm = {"model_type": "svm", "data_path": "d.csv", "hyperparameters": {"gamma": "auto"}}
    assert (await client.post("/jobs/training", json=svm)).status_code == 202


async def test_a_type_announced_after_start_is_accepted_without_a_restart(
        make_client: ClientFactory, redis: Redis) -> None:
    async with make_client(catalogue_refresh_s=0) as client:  # no timer: on a refusal only
        refused = await client.post("/jobs/training", json=BODY)
        assert _fields(refused)["body.model_type"].startswith("unknown model type 'team_model'")
        spec = (await client.get("/openapi.json")).json()
        assert "team_model" not in spec["components"]["schemas"]["TrainingRequest"][
            "properties"]["model_type"]["examples"]

        await registry.announce(redis, KEYS, TEAM, "w1", force=True)  # a worker started
        r = await client.post("/jobs/training", json=BODY)
        assert r.status_code == 202, r.text
        assert r.json()["worker_type"] == "team-cpu"
        r = await client.post("/jobs/training", json={**BODY, "requires_gpu": True})
        assert r.json()["worker_type"] == "team-cpu-gpu"

        unknown = _fields(await client.post("/jobs/training", json={**BODY,
                                                                    "model_type": "xgboost"}))
        assert "team_model" in unknown["body.model_type"]  # the known ones, learned too
        bad = {**BODY, "hyperparameters": {"depth": 9, "mode": "slow"}}
        assert _fields(await client.post("/jobs/training", json=bad)) == {
            "body.hyperparameters.depth": "should be an integer between 1 and 8 for model "
                                          "type team_model",
            "body.hyperparameters.mode": "should be one of fast, exact for model type "
                                         "team_model"}
        batch = await client.post("/jobs/training/batch", json={"jobs": [BODY, bad]})
        assert "body.jobs[1].hyperparameters.depth" in _fields(batch)

        spec = (await client.get("/openapi.json")).json()  # made again for the new catalogue
        assert "team_model" in spec["components"]["schemas"]["TrainingRequest"]["properties"][
            "model_type"]["examples"]
        queues = (await client.get("/queues")).json()
        assert "team-cpu" in str(queues)
        assert "team_model" in (await client.get("/dashboard")).text


async def test_a_batch_of_an_unknown_type_reads_the_announcements_first(
        make_client: ClientFactory, redis: Redis) -> None:
    async with make_client(catalogue_refresh_s=0) as client:
        assert (await client.post("/jobs/training/batch", json={"jobs": [BODY]})
                ).status_code == 422
        await registry.announce(redis, KEYS, TEAM, "w1", force=True)
        r = await client.post("/jobs/training/batch", json={"jobs": [BODY, BODY]})
        assert r.status_code == 202, r.text
        assert [j["worker_type"] for j in r.json()["jobs"]] == ["team-cpu", "team-cpu"]


async def test_the_timer_learns_types_and_forgets_removed_ones(
        make_client: ClientFactory, redis: Redis) -> None:
    async with make_client(catalogue_refresh_s=0.1) as client:
        await registry.announce(redis, KEYS, TEAM, "w1", force=True)

        async def learned() -> bool:
            return "team_model" in STATE.tables.models

        await eventually(learned, timeout=10, what="the timer's refresh")
        assert (await client.post("/jobs/training", json=BODY)).status_code == 202
        await redis.delete(KEYS.declaration, "ai:worker_types")  # retired by an operator

        async def forgotten() -> bool:
            return "team_model" not in STATE.tables.models

        await eventually(forgotten, timeout=10, what="the type to be forgotten")


async def test_a_learned_types_events_reach_sse(redis_url: str, redis: Redis) -> None:
    """The hub follows the event feed of a type learned while it runs: a job's live events
    (started, succeeded) arrive over SSE."""
    async with live_gateway(redis_url, catalogue_refresh_s=0) as gw, \
            AsyncClient(base_url=gw.url, timeout=10) as http:
        await eventually(lambda: _refreshed(gw.app), what="the start-up refresh")
        await registry.announce(redis, KEYS, TEAM, "w1", force=True)
        r = await http.post("/jobs/training", json=BODY)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert KEYS.events in gw.hub.feeds
        reading = asyncio.create_task(read_events(http, f"/jobs/{job_id}/events"))
        worker = QueueConsumer(redis, KEYS, "w1", StreamLimits(), 5)  # as a worker does
        await worker.ensure_groups()
        [d] = await worker.read(redis, 1, 1000)
        await worker.start([d])
        assert await worker.write_endings([Complete.of(d, {"accuracy": 1.0})]) == [None]
        got, ended = await asyncio.wait_for(reading, timeout=30)
        assert ended and [f.event for f in got][-1] == "succeeded"
        assert gw.hub.connected


async def _refreshed(app: Any) -> bool:
    return bool(app.state.catalogue.refreshes)


async def test_a_model_type_without_inference_is_refused_single_and_in_a_batch(
        make_client: ClientFactory, redis: Redis) -> None:
    """A plugin model type declared for training only: its trained jobs take no inference job,
    whether submitted alone or in a batch beside a good one (then nothing is queued)."""
    from schemas.status import JobKind

    only_training = LoadedPlugin("team", "team-plugin 1.0",
                                 plugin(kinds=(JobKind.TRAINING,)))
    async with make_client(catalogue_refresh_s=0) as client:
        await registry.announce(redis, KEYS, only_training, "w1", force=True)
        trained = (await client.post("/jobs/training", json=BODY)).json()["job_id"]
        await redis.hset(KEYS.job(trained), "status", "succeeded")
        r = await client.post("/jobs/inference", json={"model_id": trained, "inputs": [[1]]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "routing_error", r.text
        assert "serves no inference jobs" in r.text
        noop = (await client.post("/jobs/training", json={"model_type": "noop"})).json()
        await redis.hset(QueueKeys("diagnostic").job(noop["job_id"]), "status", "succeeded")
        before = await redis.dbsize()
        r = await client.post("/jobs/inference/batch", json={"jobs": [
            {"model_id": noop["job_id"], "inputs": [[1]]},
            {"model_id": trained, "inputs": [[1]]}]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "routing_error", r.text
        assert "jobs[1]" in r.text
        assert await redis.dbsize() == before  # all or nothing


async def test_declared_inference_parameters_are_checked_at_submit(client: AsyncClient,
                                                                   redis: Redis) -> None:
    """An inference job's parameters against what its model's type declares (known once the
    model is looked up): 422 naming the field, single and in a batch, nothing queued."""
    body = {"model_type": "mobilenet", "data_path": "images.npz"}
    model = (await client.post("/jobs/training", json=body)).json()
    await redis.hset(QueueKeys("tensorflow").job(model["job_id"]), "status", "succeeded")
    before = await redis.dbsize()
    bad = {"model_id": model["job_id"], "inputs": [[1]], "parameters": {"batch_size": 0}}
    fields = _fields(await client.post("/jobs/inference", json=bad))
    assert fields == {"body.parameters.batch_size":
                      "should be an integer between 1 and 65536 for model type mobilenet"}
    good = {**bad, "parameters": {"batch_size": 8, "undeclared": "passes through"}}
    fields = _fields(await client.post("/jobs/inference/batch", json={"jobs": [good, bad]}))
    assert list(fields) == ["body.jobs[1].parameters.batch_size"]
    assert await redis.dbsize() == before  # nothing queued
    assert (await client.post("/jobs/inference", json=good)).status_code == 202
