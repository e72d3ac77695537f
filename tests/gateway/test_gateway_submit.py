"""Submitting jobs over HTTP: the seed's body, routing, validation messages, idempotency."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from schemas.status import JobKind
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.gateway.payloads import SEED_BODY
from tests.support import eventually, running_worker, settings_for

JOB_ID = re.compile(r"^job_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def test_seed_curl_body_is_accepted(client: AsyncClient, redis: Redis) -> None:
    r = await client.post("/jobs/training", json=SEED_BODY)
    assert r.status_code == 202, r.text
    body = r.json()
    assert JOB_ID.match(body["job_id"])
    assert body["worker_type"] == "pytorch-2.1"
    assert body["status"] == "queued" and body["duplicate"] is False
    assert body["status_url"] == f"/jobs/{body['job_id']}/status"
    assert r.headers["location"] == body["status_url"]
    stream = QueueKeys("pytorch-2.1").stream(JobKind.TRAINING)
    assert body["stream"] == stream
    assert await redis.xlen(stream) == 1


@pytest.mark.parametrize(("model_type", "requires_gpu", "worker_type"), [
    ("bert", False, "pytorch-2.1"),
    ("resnet", True, "pytorch-2.0-gpu"),
    ("inception", False, "tensorflow"),
    ("random_forest", False, "sklearn"),
])
async def test_seed_routing_examples(client: AsyncClient, model_type: str, requires_gpu: bool,
                                     worker_type: str) -> None:
    body = {"model_type": model_type, "data_path": "d.csv", "requires_gpu": requires_gpu}
    r = await client.post("/jobs/training", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["worker_type"] == worker_type


def _with(**changes: Any) -> dict[str, Any]:
    body = {**SEED_BODY, "hyperparameters": dict(SEED_BODY["hyperparameters"])}
    for name, value in changes.items():
        if name in body["hyperparameters"]:
            body["hyperparameters"][name] = value
        else:
            body[name] = value
    return body


@pytest.mark.parametrize(("body", "field", "message"), [
    (_with(epochs=0), "body.hyperparameters.epochs", "Input should be greater than 0"),
    (_with(learning_rate=-1), "body.hyperparameters.learning_rate",
     "Input should be greater than 0"),
    (_with(model_type="xgboost"), "body.model_type", "unknown model type 'xgboost'"),
    (_with(epochs="many"), "body.hyperparameters.epochs", "Input should be a valid integer"),
    (_with(requires_gpu="maybe"), "body.requires_gpu", "Input should be a valid boolean"),
    (_with(colour="blue"), "body.colour", "Extra inputs are not permitted"),
    (_with(data_path=None), "body", "data_path is required for model type 'bert'"),
    ({"data_path": "d.csv"}, "body.model_type", "Field required"),
])
async def test_invalid_training_request_is_422_with_the_field(
    client: AsyncClient, redis: Redis, body: dict[str, Any], field: str, message: str
) -> None:
    r = await client.post("/jobs/training", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert f"{field}: {message}" in error["message"]
    assert any(d["field"] == field and message in d["message"] for d in error["details"])
    assert await redis.dbsize() == 0  # nothing written


async def test_missing_and_malformed_bodies_are_422(client: AsyncClient) -> None:
    r = await client.post("/jobs/training")
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "body"
    r = await client.post("/jobs/training", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["type"] == "json_invalid"
    r = await client.post("/jobs/training", json=[1, 2])
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


async def test_unroutable_request_is_422_routing_error(client: AsyncClient) -> None:
    r = await client.post("/jobs/training", json={"model_type": "inception", "data_path": "x",
                                                  "requires_gpu": True})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "routing_error"
    assert "no GPU worker type serves model type 'inception'" in r.json()["error"]["message"]


async def test_idempotency_key_returns_the_same_job_once(client: AsyncClient,
                                                         redis: Redis) -> None:
    headers = {"Idempotency-Key": "order-42:attempt"}
    first = await client.post("/jobs/training", json=SEED_BODY, headers=headers)
    again = await client.post("/jobs/training", json=SEED_BODY, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["duplicate"] is True
    assert again.headers["location"] == first.headers["location"]
    assert await redis.xlen(QueueKeys("pytorch-2.1").stream(JobKind.TRAINING)) == 1


async def test_idempotency_key_reused_for_another_body_is_409(client: AsyncClient) -> None:
    headers = {"Idempotency-Key": "k1"}
    assert (await client.post("/jobs/training", json=SEED_BODY, headers=headers)).is_success
    r = await client.post("/jobs/training", json=_with(epochs=6), headers=headers)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_conflict"


@pytest.mark.parametrize("key", ["has space", "x" * 201, "", "ключ"])
async def test_bad_idempotency_key_is_422(client: AsyncClient, key: str) -> None:
    r = await client.post("/jobs/training", json=SEED_BODY,
                          headers=[(b"Idempotency-Key", key.encode("utf-8"))])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["field"] == "header.Idempotency-Key"


MODEL_ID = "job_00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(("path", "raw", "field", "message"), [
    ("/jobs/training", '{"model_type": "noop", "hyperparameters": {"x": 18446744073709551616}}',
     "body.hyperparameters", "hyperparameter 'x': integers must fit in 64 bits"),
    ("/jobs/training", '{"model_type": "noop", "hyperparameters": {"x": NaN}}',
     "body.hyperparameters", "hyperparameter 'x': numbers must be finite"),
    ("/jobs/training", '{"model_type": "noop", "hyperparameters": {"x": "\\ud800"}}',
     "body.hyperparameters", "hyperparameter 'x': text must be valid Unicode"),
    ("/jobs/training", '{"model_type": "noop", "description": "\\udfff"}',
     "body.description", "valid string"),
    ("/jobs/inference", '{"model_id": "' + MODEL_ID + '", "inputs": [[1, Infinity]]}',
     "body.inputs[0][1]", "numbers must be finite"),
    ("/jobs/inference", '{"model_id": "' + MODEL_ID + '", "inputs": [[-99999999999999999999]]}',
     "body.inputs[0][0]", "integers must fit in 64 bits"),
    ("/jobs/inference", '{"model_id": "' + MODEL_ID + '", "inputs": [[1]], '
     '"parameters": {"t": -Infinity}}', "body.parameters.t", "numbers must be finite"),
])
async def test_values_json_cannot_hold_are_422_naming_the_field(
        client: AsyncClient, redis: Redis, path: str, raw: str, field: str, message: str
) -> None:
    """Integers beyond 64 bits, NaN/Infinity and lone surrogates are refused at the edge; they
    used to pass validation and then fail in the JSON encoder (500), or be stored as null."""
    r = await client.post(path, content=raw.encode(),
                          headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert any(d["field"] == field and message in d["message"] for d in error["details"]), error
    assert await redis.dbsize() == 0


async def _finished(client: AsyncClient, redis: Redis, redis_url: str, tmp_path: Path,
                    body: dict[str, Any], headers: dict[str, str]) -> str:
    """Submit ``body`` and let a diagnostic worker run it to success; its job id."""
    first = await client.post("/jobs/training" if "model_type" in body else "/jobs/inference",
                              json=body, headers=headers)
    assert first.status_code == 202, first.text
    job_id: str = first.json()["job_id"]
    async with running_worker(settings_for(redis_url, tmp_path)):
        await Producer(redis).wait(job_id, timeout=30)
    return job_id


async def test_a_duplicate_answers_the_jobs_status_now(
        client: AsyncClient, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """A retried submit of a job that ran since says how it is now, not 'queued'."""
    headers = {"Idempotency-Key": "nightly-1"}
    job_id = await _finished(client, redis, redis_url, tmp_path, {"model_type": "noop"},
                             headers)
    again = await client.post("/jobs/training", json={"model_type": "noop"}, headers=headers)
    assert again.status_code == 200
    assert again.json() | {"stream": None} == again.json() | {
        "job_id": job_id, "duplicate": True, "status": "succeeded", "stream": None}


async def test_an_inference_retry_outlives_its_models_record(
        client: AsyncClient, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """While its Idempotency-Key lives, a retried inference submit gets its first job, even
    once the model's record has expired (it was 422 model_not_found)."""
    model_id = await _finished(client, redis, redis_url, tmp_path, {"model_type": "noop"}, {})
    body, headers = {"model_id": model_id, "inputs": [[1, 2]]}, {"Idempotency-Key": "infer-7"}
    first = await client.post("/jobs/inference", json=body, headers=headers)
    assert first.status_code == 202, first.text
    await redis.delete(QueueKeys("diagnostic").job(model_id))  # as its retention ran out
    again = await client.post("/jobs/inference", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == first.json()["job_id"] and again.json()["duplicate"]
    other = await client.post("/jobs/inference", json={**body, "inputs": [[3, 4]]},
                              headers=headers)
    assert other.status_code == 409  # the key still guards against another request


async def test_a_body_that_is_not_utf8_is_422_like_malformed_json(client: AsyncClient) -> None:
    """It was a 400 bad_request, a code the API does not list."""
    r = await client.post("/jobs/training", content=b'{"model_type": "\xff\xfe"}',
                          headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["details"][0] | {"message": ""} == {
        "field": "body", "message": "", "type": "json_invalid"}


async def test_the_spec_names_what_the_server_accepts(client: AsyncClient) -> None:
    """Model types, worker types and non-empty inputs are in the OpenAPI spec, not only
    enforced by the server. Model types come from plugins and grow while the gateway runs
    (workers announce theirs), so the spec lists those known now as examples, not an enum."""
    from schemas.catalogue import CATALOGUE, KNOWN_MODEL_TYPES

    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    training = schemas["TrainingRequest"]["properties"]
    assert "enum" not in training["model_type"]
    assert training["model_type"]["examples"] == sorted(KNOWN_MODEL_TYPES)
    assert "plugin" in training["model_type"]["description"]
    assert set(training["framework_override"]["examples"]) == set(CATALOGUE)
    inputs = schemas["InferenceRequest"]["properties"]["inputs"]["anyOf"][0]
    assert inputs["minItems"] == 1
    jobs = spec["paths"]["/jobs"]["get"]["parameters"]
    worker_type = next(p for p in jobs if p["name"] == "worker_type")
    assert set(worker_type["schema"]["enum"]) >= set(CATALOGUE)


async def test_a_full_queue_is_429_and_takes_jobs_again_as_it_drains(
        make_client: Any, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """MAX_QUEUED bounds the jobs not finished per worker type and kind, so no client can fill
    Redis until it refuses writes: past it, 429 queue_full with Retry-After, nothing written."""
    async with make_client(max_queued=3) as client:
        for _ in range(3):
            assert (await client.post("/jobs/training", json={"model_type": "noop"})
                    ).status_code == 202
        keys = await redis.dbsize()
        full = await client.post("/jobs/training", json={"model_type": "noop"})
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        assert full.json()["error"]["code"] == "queue_full"
        assert await redis.dbsize() == keys  # nothing written
        async with running_worker(settings_for(redis_url, tmp_path)):
            async def drained() -> bool:
                return await redis.hget(QueueKeys("diagnostic").stats, "succeeded") == "3"

            await eventually(drained, what="the three jobs done")
        assert (await client.post("/jobs/training", json={"model_type": "noop"})
                ).status_code == 202
