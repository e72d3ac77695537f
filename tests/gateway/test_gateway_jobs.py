"""Job lifecycle over HTTP with a real in-process diagnostic worker: status, list, cancel,
inference, and the 404/409/422 answers around them."""

from __future__ import annotations

from pathlib import Path

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from schemas.status import JobKind
from streams.keys import QueueKeys
from tests.gateway.payloads import in_status, submit
from tests.support import eventually, running_worker, settings_for

DIAG_TRAINING = QueueKeys("diagnostic").stream(JobKind.TRAINING)
UNKNOWN = "job_12345678-1234-1234-1234-123456789012"


@pytest.mark.parametrize("job_id", [UNKNOWN, "job_nope", "12345", "job_" + "a" * 500])
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/jobs/{}/status"), ("GET", "/jobs/{}"), ("POST", "/jobs/{}/cancel"),
])
async def test_unknown_or_malformed_job_is_404(client: AsyncClient, method: str, path: str,
                                               job_id: str) -> None:
    r = await client.request(method, path.format(job_id))
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "job_not_found"


async def test_noop_job_runs_and_is_listed(client: AsyncClient, redis_url: str,
                                           tmp_path: Path) -> None:
    async with running_worker(settings_for(redis_url, tmp_path)):
        job_id = await submit(client)
        view = await eventually(in_status(client, job_id, "succeeded"), what="succeeded")
    assert view["result"]["ok"] is True and view["worker_type"] == "diagnostic"
    full = (await client.get(f"/jobs/{job_id}")).json()
    assert full["links"]["events"] == f"/jobs/{job_id}/events"
    assert full["deliveries"] == 1 and full["worker"] and full["finished_at"]
    listed = (await client.get("/jobs")).json()
    assert listed["count"] == 1 and listed["jobs"][0]["job_id"] == job_id


async def test_list_filters(client: AsyncClient) -> None:
    queued = await submit(client)
    cancelled = await submit(client)
    assert (await client.post(f"/jobs/{cancelled}/cancel")).status_code == 200

    async def ids(**params: str | int) -> list[str]:
        r = await client.get("/jobs", params=params)
        assert r.status_code == 200, r.text
        return [j["job_id"] for j in r.json()["jobs"]]

    assert await ids() == [cancelled, queued]  # most recent first
    assert await ids(limit=1) == [cancelled]
    assert await ids(status="queued") == [queued]
    assert await ids(status="cancelled", worker_type="diagnostic") == [cancelled]
    assert await ids(worker_type="sklearn") == []


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "sleeping"}, "query.status"),
    ({"worker_type": "pytorch-9"}, "query.worker_type"),
    ({"limit": 0}, "query.limit"),
    ({"limit": 501}, "query.limit"),
])
async def test_list_rejects_bad_filters(client: AsyncClient, params: dict[str, str | int],
                                        field: str) -> None:
    r = await client.get("/jobs", params=params)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == field


async def test_cancel_queued_job_removes_its_entry(client: AsyncClient, redis: Redis) -> None:
    job_id = await submit(client)
    assert await redis.xlen(DIAG_TRAINING) == 1
    r = await client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200
    assert r.json() == {"job_id": job_id, "status": "cancelled"}
    assert await redis.xlen(DIAG_TRAINING) == 0
    assert (await client.get(f"/jobs/{job_id}/status")).json()["status"] == "cancelled"
    again = await client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "illegal_transition"


async def test_cancel_finished_job_is_409(client: AsyncClient, redis_url: str,
                                          tmp_path: Path) -> None:
    async with running_worker(settings_for(redis_url, tmp_path)):
        job_id = await submit(client)
        await eventually(in_status(client, job_id, "succeeded"), what="succeeded")
    r = await client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "illegal_transition"
    assert "succeeded" in r.json()["error"]["message"]


async def test_cancel_running_job_stops_it(client: AsyncClient, redis_url: str,
                                           tmp_path: Path) -> None:
    async with running_worker(settings_for(redis_url, tmp_path)):
        job_id = await submit(client, "sleep", seconds=5, steps=50)
        await eventually(in_status(client, job_id, "running"), what="running")
        r = await client.post(f"/jobs/{job_id}/cancel")
        assert r.json() == {"job_id": job_id, "status": "cancelling"}
        view = await eventually(in_status(client, job_id, "cancelled", "succeeded"),
                                timeout=4, what="cancelled")
    assert view["status"] == "cancelled"
    assert (await client.get(f"/jobs/{job_id}")).json()["cancel_requested"] is True


async def test_inference_uses_a_trained_model(client: AsyncClient, redis_url: str,
                                              tmp_path: Path) -> None:
    async with running_worker(settings_for(redis_url, tmp_path)):
        model_id = await submit(client)
        await eventually(in_status(client, model_id, "succeeded"), what="trained")
        r = await client.post("/jobs/inference",
                              json={"model_id": model_id, "inputs": [[1, 2], [3, 4, 5]]})
        assert r.status_code == 202, r.text
        assert r.json()["kind"] == "inference" and r.json()["worker_type"] == "diagnostic"
        view = await eventually(in_status(client, r.json()["job_id"], "succeeded"),
                                what="inferred")
    assert view["result"]["predictions"] == [2, 3]


async def test_inference_on_unknown_model_is_422(client: AsyncClient) -> None:
    r = await client.post("/jobs/inference", json={"model_id": UNKNOWN, "inputs": [[1]]})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["details"][0]["field"] == "body.model_id"


async def test_inference_on_untrained_model_is_409(client: AsyncClient) -> None:
    model_id = await submit(client)  # no worker: stays queued
    r = await client.post("/jobs/inference", json={"model_id": model_id, "inputs": [[1]]})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "model_not_ready"
    assert "queued" in r.json()["error"]["message"]


async def test_inference_request_is_validated(client: AsyncClient) -> None:
    r = await client.post("/jobs/inference", json={"model_id": "m1", "inputs": [[1]]})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "body.model_id"
    r = await client.post("/jobs/inference", json={"model_id": UNKNOWN})
    assert r.status_code == 422
    assert "give exactly one of inputs" in r.json()["error"]["message"]
