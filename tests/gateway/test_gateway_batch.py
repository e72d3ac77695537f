"""Batch submit over HTTP (POST /jobs/training/batch, /jobs/inference/batch): all or nothing,
per-job Idempotency-Keys, several worker types (hash slots) in one batch, a full queue, a down
Redis. "Nothing written" is checked on the streams, the jobs index and the key count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from aiq.redis_server import RedisServer
from schemas.status import JobKind
from streams.events import QUEUED_EVENT_ID, replay
from streams.keys import QueueKeys
from tests.support import run_burst, settings_for

NOOP: dict[str, Any] = {"model_type": "noop"}
FOREST: dict[str, Any] = {"model_type": "random_forest", "data_path": "builtin:digits"}
BERT: dict[str, Any] = {"model_type": "bert", "data_path": "/data/s.csv"}
TYPES = {"noop": "diagnostic", "random_forest": "sklearn", "bert": "pytorch-2.1"}
TRAIN, INFER = "/jobs/training/batch", "/jobs/inference/batch"


def job(base: dict[str, Any], key: str | None = None, **hp: Any) -> dict[str, Any]:
    out = {**base, "hyperparameters": hp} if hp else dict(base)
    if key is not None:
        out["idempotency_key"] = key
    return out


async def footprint(redis: Redis) -> dict[str, int]:
    """Lengths of every training stream and jobs index, and the key count."""
    out = {"keys": await redis.dbsize()}
    for worker_type in TYPES.values():
        keys = QueueKeys(worker_type)
        out[f"{worker_type}:queue"] = await redis.xlen(keys.stream(JobKind.TRAINING))
        out[f"{worker_type}:index"] = await redis.zcard(keys.jobs)
    return out


def fields(r: Any) -> list[str]:
    return [d["field"] for d in r.json()["error"]["details"]]


async def test_a_batch_of_several_worker_types_queues_every_job_in_order(
        client: AsyncClient, redis: Redis) -> None:
    bodies = [job(NOOP, steps=i) if i % 3 == 0 else job(FOREST) if i % 3 == 1 else job(BERT)
              for i in range(30)]
    r = await client.post(TRAIN, json={"jobs": bodies})
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["queued"] == 30 and answer["duplicates"] == 0
    assert [j["worker_type"] for j in answer["jobs"]] == [TYPES[b["model_type"]] for b in bodies]
    assert len({j["job_id"] for j in answer["jobs"]}) == 30
    assert all(j["status"] == "queued" and j["duplicate"] is False for j in answer["jobs"])
    counts = await footprint(redis)
    for worker_type in TYPES.values():
        assert counts[f"{worker_type}:queue"] == counts[f"{worker_type}:index"] == 10
    first = answer["jobs"][3]  # the jobs are the ones asked for, each readable as usual
    view = (await client.get(f"/jobs/{first['job_id']}")).json()
    assert view["model_type"] == "noop" and view["hyperparameters"]["steps"] == 3
    # Its queued event: in the type's feed and the record only (no job stream while queued).
    events = (await replay(redis, QueueKeys("diagnostic"), first["job_id"])).entries
    assert [(i, e["type"]) for i, e in events] == [(QUEUED_EVENT_ID, "queued")]
    assert not await redis.exists(QueueKeys("diagnostic").job_events(first["job_id"]))


@pytest.mark.parametrize("where", [0, 3, 999])
async def test_one_invalid_job_anywhere_is_422_naming_it_and_nothing_is_queued(
        client: AsyncClient, redis: Redis, where: int) -> None:
    bodies = [job(NOOP) for _ in range(1000)]
    bodies[where] = {"model_type": "xgboost"}
    r = await client.post(TRAIN, json={"jobs": bodies})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert fields(r) == [f"body.jobs[{where}].model_type"]
    assert await redis.dbsize() == 0


async def test_every_invalid_job_is_named_and_unroutable_ones_too(
        client: AsyncClient, redis: Redis) -> None:
    bodies = [job(NOOP), {"model_type": "inception", "data_path": "x", "requires_gpu": True},
              job(NOOP, epochs=0), job(FOREST, key="has space"), {**NOOP, "colour": "red"}]
    r = await client.post(TRAIN, json={"jobs": bodies})
    assert r.status_code == 422, r.text
    assert fields(r) == ["body.jobs[1]", "body.jobs[2].hyperparameters.epochs",
                         "body.jobs[3].idempotency_key", "body.jobs[4].colour"]
    assert "no GPU worker type serves model type 'inception'" in r.json()["error"]["message"]
    assert await redis.dbsize() == 0


@pytest.mark.parametrize("count", [0, 1001])
async def test_an_empty_batch_or_one_over_1000_jobs_is_422(
        client: AsyncClient, redis: Redis, count: int) -> None:
    r = await client.post(TRAIN, json={"jobs": [job(NOOP)] * count})
    assert r.status_code == 422, r.text
    assert fields(r) == ["body.jobs"]
    assert await redis.dbsize() == 0


async def test_a_retried_batch_answers_the_same_jobs_as_duplicates(
        client: AsyncClient, redis: Redis) -> None:
    bodies = [job(NOOP if i % 2 else FOREST, key=f"sweep-{i}", seed=i) for i in range(10)]
    first = await client.post(TRAIN, json={"jobs": bodies})
    assert first.status_code == 202, first.text
    before = await footprint(redis)
    again = await client.post(TRAIN, json={"jobs": bodies})
    assert again.status_code == 200, again.text  # nothing new: as a duplicate single submit
    assert [j["job_id"] for j in again.json()["jobs"]] == \
        [j["job_id"] for j in first.json()["jobs"]]
    assert all(j["duplicate"] for j in again.json()["jobs"])
    assert again.json()["queued"] == 0 and again.json()["duplicates"] == 10
    assert await footprint(redis) == before
    # A single submit with the same key and body is the same job too.
    single = await client.post("/jobs/training", json=job(NOOP, seed=1),
                               headers={"Idempotency-Key": "sweep-1"})
    assert single.status_code == 200 and single.json()["job_id"] == first.json()["jobs"][1][
        "job_id"]


async def test_a_key_reused_for_another_job_is_409_and_nothing_is_queued(
        client: AsyncClient, redis: Redis) -> None:
    assert (await client.post(TRAIN, json={"jobs": [job(NOOP, key="k1", seed=1)]})
            ).status_code == 202
    before = await footprint(redis)
    r = await client.post(TRAIN, json={"jobs": [job(NOOP, key="fresh"), job(FOREST),
                                                job(NOOP, key="k1", seed=2)]})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "idempotency_conflict"
    assert fields(r) == ["body.jobs[2].idempotency_key"]
    assert await footprint(redis) == before  # not even the fresh key's or the forest job
    assert not await redis.exists(QueueKeys("diagnostic").idempotency("fresh"))


async def test_the_same_key_twice_in_one_batch(client: AsyncClient, redis: Redis) -> None:
    same = await client.post(TRAIN, json={"jobs": [job(NOOP, key="twice"), job(FOREST),
                                                   job(NOOP, key="twice")]})
    assert same.status_code == 202, same.text
    jobs = same.json()["jobs"]
    assert jobs[2]["job_id"] == jobs[0]["job_id"]
    assert [j["duplicate"] for j in jobs] == [False, False, True]
    assert (await footprint(redis))["diagnostic:queue"] == 1
    before = await footprint(redis)
    for other in (job(NOOP, key="again", seed=9), job(FOREST, key="again")):  # same or other type
        r = await client.post(TRAIN, json={"jobs": [job(NOOP, key="again"), other]})
        assert r.status_code == 409, r.text
        assert fields(r) == ["body.jobs[1].idempotency_key"]
    assert await footprint(redis) == before


async def test_new_duplicate_and_conflicting_jobs_several_at_once(
        client: AsyncClient, redis: Redis) -> None:
    """New jobs, duplicates of earlier ones, duplicates inside the batch and conflicts, of
    several worker types at once: one conflict refuses all; without it, each gets its due."""
    earlier = await client.post(TRAIN, json={"jobs": [
        job(NOOP, key="a"), job(FOREST, key="b"), job(BERT, key="c")]})
    ids = [j["job_id"] for j in earlier.json()["jobs"]]
    before = await footprint(redis)
    mixed = [job(NOOP, key="a"), job(FOREST), job(BERT, key="c"), job(NOOP, key="d"),
             job(NOOP, key="d"), job(FOREST, key="b", seed=1), job(BERT, key="e"),
             job(FOREST, key="b", seed=2)]
    r = await client.post(TRAIN, json={"jobs": mixed})
    assert r.status_code == 409, r.text
    assert fields(r) == ["body.jobs[7].idempotency_key"]  # b twice, with two other bodies
    assert await footprint(redis) == before
    del mixed[7]
    r = await client.post(TRAIN, json={"jobs": mixed})
    assert r.status_code == 409 and fields(r) == ["body.jobs[5].idempotency_key"]  # b of earlier
    assert await footprint(redis) == before
    del mixed[5]
    r = await client.post(TRAIN, json={"jobs": mixed})
    assert r.status_code == 202, r.text
    got = r.json()["jobs"]
    assert [j["duplicate"] for j in got] == [True, False, True, False, True, False]
    assert got[0]["job_id"] == ids[0] and got[2]["job_id"] == ids[2]
    assert got[4]["job_id"] == got[3]["job_id"]
    assert r.json()["queued"] == 3
    after = await footprint(redis)
    assert after["diagnostic:queue"] == before["diagnostic:queue"] + 1
    assert after["sklearn:queue"] == before["sklearn:queue"] + 1
    assert after["pytorch-2.1:queue"] == before["pytorch-2.1:queue"] + 1


async def test_a_full_queue_anywhere_in_the_batch_is_429_and_nothing_is_queued(
        make_client: Any, redis: Redis) -> None:
    async with make_client(max_queued=5) as client:
        assert (await client.post(TRAIN, json={"jobs": [job(NOOP)] * 3})).status_code == 202
        before = await footprint(redis)
        for bodies in ([job(NOOP)] * 3, [job(FOREST)] * 2 + [job(NOOP)] * 3 + [job(BERT)]):
            r = await client.post(TRAIN, json={"jobs": bodies})
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "queue_full"
            assert r.headers["retry-after"] == "1"
            assert await footprint(redis) == before  # the sklearn and pytorch jobs neither
        # Exactly to the limit fits; duplicates take no room.
        r = await client.post(TRAIN, json={"jobs": [job(NOOP, key="x"), job(NOOP, key="x"),
                                                    job(FOREST)]})
        assert r.status_code == 202, r.text
        assert (await footprint(redis))["diagnostic:queue"] == 4


async def _model(client: AsyncClient, redis_url: str, tmp_path: Path) -> str:
    """A succeeded training job (a noop model, run by a burst worker)."""
    r = await client.post("/jobs/training", json=NOOP)
    await run_burst(settings_for(redis_url, tmp_path))
    status = (await client.get(f"/jobs/{r.json()['job_id']}/status")).json()["status"]
    assert status == "succeeded"
    model_id: str = r.json()["job_id"]
    return model_id


async def test_inference_batch_unknown_or_unready_models_refuse_the_whole_batch(
        client: AsyncClient, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    model = await _model(client, redis_url, tmp_path)
    queued = (await client.post("/jobs/training", json=NOOP)).json()["job_id"]
    unknown = "job_00000000-0000-0000-0000-000000000000"
    stream = QueueKeys("diagnostic").stream(JobKind.INFERENCE)
    keys = await redis.dbsize()
    rows = {"inputs": [[1, 2]]}
    r = await client.post(INFER, json={"jobs": [
        {"model_id": model, **rows}, {"model_id": model, **rows},
        {"model_id": unknown, **rows}, {"model_id": model, **rows},
        {"model_id": unknown, **rows}]})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "model_not_found"
    assert fields(r) == ["body.jobs[2].model_id", "body.jobs[4].model_id"]
    r = await client.post(INFER, json={"jobs": [{"model_id": model, **rows},
                                                {"model_id": queued, **rows}]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_not_ready"
    assert fields(r) == ["body.jobs[1].model_id"]
    assert await redis.xlen(stream) == 0 and await redis.dbsize() == keys
    r = await client.post(INFER, json={"jobs": [{"model_id": model, **rows, "data_path": "d.csv"}]})
    assert fields(r) == ["body.jobs[0]"]  # two sources: the item's own rule


async def test_inference_batch_queues_and_retries_as_duplicates(
        client: AsyncClient, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    model = await _model(client, redis_url, tmp_path)
    bodies = [{"model_id": model, "inputs": [[i, i + 1]], "idempotency_key": f"p-{i}"}
              for i in range(20)] + [{"model_id": model, "inputs": [[0]]}]
    first = await client.post(INFER, json={"jobs": bodies})
    assert first.status_code == 202, first.text
    assert first.json()["queued"] == 21
    stream = QueueKeys("diagnostic").stream(JobKind.INFERENCE)
    assert await redis.xlen(stream) == 21
    again = await client.post(INFER, json={"jobs": bodies[:20]})
    assert again.status_code == 200
    assert [j["job_id"] for j in again.json()["jobs"]] == \
        [j["job_id"] for j in first.json()["jobs"][:20]]
    assert await redis.xlen(stream) == 21
    await run_burst(settings_for(redis_url, tmp_path))
    fifth = first.json()["jobs"][5]["job_id"]
    assert (await client.get(f"/jobs/{fifth}")).json()["status"] == "succeeded"
    assert await redis.hget(QueueKeys("diagnostic").job(fifth), "inputs") == "[[5,6]]"
    again = await client.post(INFER, json={"jobs": bodies[:2]})  # status as it is now
    assert [j["status"] for j in again.json()["jobs"]] == ["succeeded", "succeeded"]
    conflict = await client.post(INFER, json={"jobs": [{**bodies[0], "inputs": [[7]]}]})
    assert conflict.status_code == 409 and fields(conflict) == ["body.jobs[0].idempotency_key"]


async def test_a_typical_batch_of_1000_fits_the_default_body_limit_and_a_huge_one_is_413(
        client: AsyncClient, redis: Redis) -> None:
    """A sweep of 1,000 jobs with keys, hyperparameters and descriptions is ~0.2 MiB: well
    within MAX_BODY_BYTES (1 MiB), which the batch routes share with the others."""
    typical = [job(FOREST, key=f"sweep-2026-12-04-{i:04d}", n_estimators=100 + i, max_depth=8,
                   criterion="gini") | {"description": f"forest sweep, point {i}"}
               for i in range(1000)]
    r = await client.post(TRAIN, json={"jobs": typical})
    assert r.status_code == 202, r.text
    assert int(r.request.headers["content-length"]) < 300 * 1024
    huge = [job(NOOP) | {"description": "x" * 1100} for _ in range(1000)]
    r = await client.post(TRAIN, json={"jobs": huge})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert (await footprint(redis))["diagnostic:queue"] == 0


async def test_durable_batch_without_replicas_is_503_not_replicated(
        make_client: Any, redis: Redis) -> None:
    async with make_client(submit_wait_replicas=1, submit_wait_timeout_ms=50) as client:
        r = await client.post(TRAIN, json={"jobs": [job(NOOP, key="d1"), job(FOREST, key="d2")]})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "not_replicated"
        assert r.json()["error"]["details"]["replicas_acked"] == 0
    assert (await footprint(redis))["diagnostic:queue"] == 1  # written, not confirmed


async def test_redis_down_is_503(client: AsyncClient, redis_server: RedisServer) -> None:
    redis_server.stop()
    try:
        for path, body in ((TRAIN, job(NOOP)),
                           (INFER, {"model_id": "job_00000000-0000-0000-0000-000000000000",
                                    "inputs": [[1]]})):
            r = await client.post(path, json={"jobs": [body]})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "redis_unavailable"
    finally:
        redis_server.start()
    assert (await client.post(TRAIN, json={"jobs": [job(NOOP)]})).status_code == 202
