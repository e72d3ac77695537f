"""``priority`` over HTTP: on every submit route (single and batch items, training and
inference), the lane in the 202 answer and in GET /jobs/{id}, 422 naming the field when it is
not `normal` or `high`, and the high lane counted by GET /queues and /metrics."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from schemas.status import JobKind, Priority
from streams.keys import QueueKeys

KEYS = QueueKeys("diagnostic")
NOOP: dict[str, Any] = {"model_type": "noop"}
UNKNOWN = "job_12345678-1234-1234-1234-123456789012"


def fields(r: Any) -> list[str]:
    return [d["field"] for d in r.json()["error"]["details"]]


@pytest.mark.parametrize("value", ["urgent", "HIGH", "", 1, True, None, ["high"]])
async def test_a_bad_priority_is_422_naming_it(client: AsyncClient, redis: Redis,
                                               value: Any) -> None:
    r = await client.post("/jobs/training", json={**NOOP, "priority": value})
    assert r.status_code == 422, r.text
    assert fields(r) == ["body.priority"]
    r = await client.post("/jobs/inference",
                          json={"model_id": UNKNOWN, "inputs": [[1]], "priority": value})
    assert r.status_code == 422, r.text
    assert fields(r) == ["body.priority"]
    r = await client.post("/jobs/training/batch", json={"jobs": [NOOP, {**NOOP,
                                                                         "priority": value}]})
    assert r.status_code == 422, r.text
    assert fields(r) == ["body.jobs[1].priority"]
    assert await redis.dbsize() == 0


async def test_the_lane_shows_in_the_answer_the_view_and_the_queues(client: AsyncClient,
                                                                    redis: Redis) -> None:
    high = await client.post("/jobs/training", json={**NOOP, "priority": "high"})
    normal = await client.post("/jobs/training", json={**NOOP, "priority": "normal"})
    plain = await client.post("/jobs/training", json=NOOP)
    assert [r.status_code for r in (high, normal, plain)] == [202] * 3
    assert high.json()["stream"] == KEYS.stream(JobKind.TRAINING, Priority.HIGH)
    assert normal.json()["stream"] == plain.json()["stream"] == KEYS.stream(JobKind.TRAINING)
    views = [(await client.get(f"/jobs/{r.json()['job_id']}")).json()
             for r in (high, normal, plain)]
    assert [v["priority"] for v in views] == ["high", "normal", "normal"]
    batch = await client.post("/jobs/training/batch", json={"jobs": [
        {**NOOP, "priority": "high"}, NOOP, {**NOOP, "priority": "high"}]})
    assert batch.status_code == 202, batch.text
    ids = [j["job_id"] for j in batch.json()["jobs"]]
    assert [(await client.get(f"/jobs/{i}")).json()["priority"] for i in ids] == [
        "high", "normal", "high"]
    rows = {(q["worker_type"], q["kind"]): q for q in (await client.get("/queues")).json()}
    row = rows["diagnostic", "training"]
    assert (row["length"], row["high_priority"], row["lag"]) == (6, 3, 6)
    metrics = (await client.get("/metrics")).text
    assert 'aiq_queue_length_high{kind="training",worker_type="diagnostic"} 3.0' in metrics
    assert 'aiq_queue_length{kind="training",worker_type="diagnostic"} 6.0' in metrics
