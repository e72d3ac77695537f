"""Operations endpoints: /queues, /workers, /health, and the OpenAPI description."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from httpx import AsyncClient

import aiq
from schemas.catalogue import CATALOGUE
from tests.gateway.payloads import in_status, submit
from tests.support import eventually, running_worker, settings_for


async def _queue(client: AsyncClient, worker_type: str, kind: str) -> dict[str, Any]:
    r = await client.get("/queues")
    assert r.status_code == 200, r.text
    rows = r.json()
    assert len(rows) == 3 * len(CATALOGUE)  # training, inference, command
    row: dict[str, Any] = next(q for q in rows
                               if q["worker_type"] == worker_type and q["kind"] == kind)
    return row


async def test_queues_empty_redis_reads_as_zeros(client: AsyncClient) -> None:
    row = await _queue(client, "pytorch-2.1", "inference")
    assert row["stream"] == "ai:inference:{pytorch-2.1}:queue"
    assert {k: row[k] for k in ("length", "pending", "lag", "consumers", "dead_letters",
                                "delayed")} == dict.fromkeys(
        ("length", "pending", "lag", "consumers", "dead_letters", "delayed"), 0)
    assert row["oldest_pending_age_ms"] is None


async def test_queues_count_a_waiting_job(client: AsyncClient) -> None:
    await submit(client)
    row = await _queue(client, "diagnostic", "training")
    assert (row["length"], row["pending"], row["lag"]) == (1, 0, 1)
    assert row["oldest_pending_age_ms"] is None


async def test_queues_count_a_running_job(client: AsyncClient, redis_url: str,
                                          tmp_path: Path) -> None:
    async with running_worker(settings_for(redis_url, tmp_path)):
        job_id = await submit(client, "sleep", seconds=3, steps=30)
        await eventually(in_status(client, job_id, "running"), what="running")
        row = await _queue(client, "diagnostic", "training")
        assert (row["length"], row["pending"], row["lag"], row["consumers"]) == (1, 1, 0, 1)
        assert 0 <= row["oldest_pending_age_ms"] < 10_000
        assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
        await eventually(in_status(client, job_id, "cancelled"), what="cancelled")
    row = await _queue(client, "diagnostic", "training")
    assert (row["length"], row["pending"], row["lag"]) == (0, 0, 0)


async def test_workers_lists_a_live_worker(client: AsyncClient, redis_url: str,
                                           tmp_path: Path) -> None:
    assert (await client.get("/workers")).json() == {"workers": []}
    async with running_worker(settings_for(redis_url, tmp_path), name="w-gateway-1"):
        async def listed() -> list[dict[str, Any]]:
            workers: list[dict[str, Any]] = (await client.get("/workers")).json()["workers"]
            return workers

        workers = await eventually(listed, what="worker registered")
    assert workers[0]["worker_id"] == "w-gateway-1"
    assert workers[0]["worker_type"] == "diagnostic"
    assert workers[0]["framework_version"] == aiq.__version__


async def test_health_reports_redis(client: AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["redis"] == "ok"
    assert body["redis_version"].count(".") == 2


async def test_openapi_describes_responses_and_errors(client: AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    submit_op = spec["paths"]["/jobs/training"]["post"]
    assert {"200", "202", "409", "413", "422", "503"} <= set(submit_op["responses"])
    assert submit_op["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "404" in spec["paths"]["/jobs/{job_id}/status"]["get"]["responses"]
    assert "503" in spec["paths"]["/health"]["get"]["responses"]
    assert spec["paths"]["/queues"]["get"]["responses"]["200"]["content"]
