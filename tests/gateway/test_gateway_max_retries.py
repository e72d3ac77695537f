"""A job's own ``max_retries`` over HTTP: on every submit route (single and batch items, training
and inference), shown by GET /jobs/{id}, carried in the stream entry, and a 422 naming it when
it is not an integer 0 to 1000."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from schemas.status import JobKind
from streams.keys import QueueKeys
from tests.support import run_burst, settings_for

KEYS = QueueKeys("diagnostic")
NOOP: dict[str, Any] = {"model_type": "noop"}
UNKNOWN = "job_12345678-1234-1234-1234-123456789012"
BAD = [-1, 1001, 1.5, 2.0, True, "1", [1]]


def fields(r: Any) -> list[str]:
    return [d["field"] for d in r.json()["error"]["details"]]


async def entries(redis: Redis, kind: JobKind) -> list[dict[str, str]]:
    return [f for _, f in await redis.xrange(KEYS.stream(kind))]


async def trained_model(client: AsyncClient, redis_url: str, tmp_path: Path) -> str:
    r = await client.post("/jobs/training", json=NOOP)
    await run_burst(settings_for(redis_url, tmp_path))
    assert (await client.get(f"/jobs/{r.json()['job_id']}/status")).json()["status"] == \
        "succeeded"
    model_id: str = r.json()["job_id"]
    return model_id


@pytest.mark.parametrize("value", BAD)
async def test_a_bad_max_retries_is_422_naming_it(client: AsyncClient, redis: Redis,
                                                  value: Any) -> None:
    r = await client.post("/jobs/training", json={**NOOP, "max_retries": value})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert fields(r) == ["body.max_retries"]
    r = await client.post("/jobs/inference",
                          json={"model_id": UNKNOWN, "inputs": [[1]], "max_retries": value})
    assert r.status_code == 422, r.text
    assert fields(r) == ["body.max_retries"]
    r = await client.post("/jobs/training/batch",
                          json={"jobs": [NOOP, {**NOOP, "max_retries": value}]})
    assert r.status_code == 422, r.text
    assert fields(r) == ["body.jobs[1].max_retries"]
    assert await redis.dbsize() == 0


async def test_training_max_retries_is_in_the_entry_and_the_view(client: AsyncClient,
                                                                 redis: Redis) -> None:
    ids = []
    for body in ({**NOOP, "max_retries": 0}, {**NOOP, "max_retries": 1000}, NOOP):
        r = await client.post("/jobs/training", json=body)
        assert r.status_code == 202, r.text
        ids.append(r.json()["job_id"])
    views = [(await client.get(f"/jobs/{i}")).json() for i in ids]
    assert [v.get("max_retries") for v in views] == [0, 1000, None]
    assert [e["max_retries"] for e in await entries(redis, JobKind.TRAINING)] == ["0", "1000", ""]


async def test_batches_take_max_retries_per_item(client: AsyncClient, redis: Redis,
                                                 redis_url: str, tmp_path: Path) -> None:
    r = await client.post("/jobs/training/batch", json={"jobs": [
        {**NOOP, "max_retries": 0}, NOOP, {**NOOP, "max_retries": 5, "idempotency_key": "k"}]})
    assert r.status_code == 202, r.text
    views = [(await client.get(f"/jobs/{j['job_id']}")).json() for j in r.json()["jobs"]]
    assert [v.get("max_retries") for v in views] == [0, None, 5]

    model = await trained_model(client, redis_url, tmp_path)
    r = await client.post("/jobs/inference", json={"model_id": model, "inputs": [[1]],
                                                   "max_retries": 2})
    assert r.status_code == 202, r.text
    assert (await client.get(f"/jobs/{r.json()['job_id']}")).json()["max_retries"] == 2
    r = await client.post("/jobs/inference/batch", json={"jobs": [
        {"model_id": model, "inputs": [[1]], "max_retries": 0},
        {"model_id": model, "inputs": [[2]]}]})
    assert r.status_code == 202, r.text
    views = [(await client.get(f"/jobs/{j['job_id']}")).json() for j in r.json()["jobs"]]
    assert [v.get("max_retries") for v in views] == [0, None]
    assert [e["max_retries"] for e in await entries(redis, JobKind.INFERENCE)] == ["2", "0", ""]
    r = await client.post("/jobs/inference/batch", json={"jobs": [
        {"model_id": model, "inputs": [[1]], "max_retries": -3}]})
    assert r.status_code == 422 and fields(r) == ["body.jobs[0].max_retries"]
