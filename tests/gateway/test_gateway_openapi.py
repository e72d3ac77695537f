"""The OpenAPI spec says what the server does: real responses, validated against the spec the
gateway serves (schemathesis' checks, as in test_gateway_schemathesis.py), for the cases the
property-based run found the two disagreeing."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from httpx import AsyncClient

from schemas.catalogue import DATA_FREE_MODELS
from schemas.events import EventType
from tests.gateway.conftest import ClientFactory
from tests.gateway.payloads import submit

KEY = "openapi-key-0123"
UNKNOWN = "job_12345678-1234-1234-1234-123456789012"
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")


async def _spec(client: AsyncClient) -> dict[str, Any]:
    spec: dict[str, Any] = (await client.get("/openapi.json")).json()
    return spec


async def conforms(client: AsyncClient, response: httpx.Response, path: str,
                   **path_parameters: str) -> None:
    """``response`` (of ``GET``/``POST path``) is what the served spec documents; raises the
    schemathesis failures otherwise."""
    schema = schemathesis.openapi.from_dict(await _spec(client))
    operation = schema[path][response.request.method]
    case = operation.Case(path_parameters=path_parameters or None)
    case.validate_response(response, checks=[getattr(schemathesis.checks, name)
                                             for name in CHECKS])


async def test_sse_frames_are_the_documented_events(client: AsyncClient) -> None:
    """Found by schemathesis: the spec described each SSE event as a plain string."""
    job_id = await submit(client)
    assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
    response = await client.get(f"/jobs/{job_id}/events")  # ended: the stream closes
    assert response.status_code == 200
    assert response.text.count("\nevent: ") == 2  # queued, cancelled
    await conforms(client, response, "/jobs/{job_id}/events", job_id=job_id)
    event = (await _spec(client))["paths"]["/jobs/{job_id}/events"]["get"]["responses"]["200"][
        "content"]["text/event-stream"]["schema"]
    assert event["properties"]["event"]["enum"] == [*(t.value for t in EventType), "log"]


async def test_with_an_api_key_the_spec_documents_it_and_the_401(
        make_client: ClientFactory) -> None:
    """Found by schemathesis: with API_KEY set, every guarded route answered an undocumented
    401 to a request without the key."""
    async with make_client(api_key=KEY) as client:
        spec = await _spec(client)
        assert set(spec["components"]["securitySchemes"]) == {
            "ApiKeyHeader", "BearerAuth", "ApiKeyQuery"}
        for path, operations in spec["paths"].items():
            for operation in operations.values():
                guarded = path != "/health"
                assert ("401" in operation["responses"]) == guarded, path
                assert ("security" in operation) == guarded, path
        for path, method, params in (("/jobs", "GET", {}), ("/jobs/training", "POST", {}),
                                     ("/jobs/{job_id}/events", "GET", {"job_id": UNKNOWN})):
            url = path.format(**params)
            response = await client.request(method, url, json={} if method == "POST" else None)
            assert response.status_code == 401
            await conforms(client, response, path, **params)


async def test_without_an_api_key_the_spec_declares_none(client: AsyncClient) -> None:
    spec = await _spec(client)
    assert "securitySchemes" not in spec["components"]
    assert all("401" not in operation["responses"] and "security" not in operation
               for operations in spec["paths"].values() for operation in operations.values())


async def test_optional_parameters_are_not_documented_as_null(client: AsyncClient) -> None:
    """Found by schemathesis: ``Last-Event-ID`` was documented as ``string | null``, so a
    valid request sent the text ``null``, which the server rightly refuses (422). A header or
    query string cannot carry a JSON null; leaving the parameter out is how it is absent."""
    spec = await _spec(client)
    parameters = [p for operations in spec["paths"].values()
                  for operation in operations.values() for p in operation.get("parameters", ())]
    assert {p["name"] for p in parameters} >= {"Last-Event-ID", "last_event_id", "status",
                                               "worker_type", "Idempotency-Key"}
    for parameter in parameters:
        assert "'type': 'null'" not in str(parameter["schema"]), parameter
    event_id = next(p for p in parameters if p["name"] == "Last-Event-ID")
    assert event_id["schema"]["type"] == "string" and "pattern" in event_id["schema"]
    job_id = await submit(client)
    response = await client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "null"})
    assert response.status_code == 422


async def test_extra_hyperparameters_are_documented_as_scalars(client: AsyncClient) -> None:
    """Found by schemathesis: the spec let extra hyperparameters be anything (objects, lists),
    which the server refuses (422); it says scalars now."""
    extra = (await _spec(client))["components"]["schemas"]["Hyperparameters"][
        "additionalProperties"]
    assert set(extra["type"]) == {"string", "number", "boolean", "null"}
    for value, status in (([1], 422), ({"a": 1}, 422), ("x", 202), (1.5, 202), (None, 202)):
        r = await client.post("/jobs/training", json={"model_type": "noop",
                                                      "hyperparameters": {"extra": value}})
        assert r.status_code == status, (value, r.text)


async def test_training_documents_when_data_path_is_required(client: AsyncClient) -> None:
    """Found by schemathesis: ``{"model_type": "gpt"}`` was spec-valid but refused (422,
    data_path is required); the spec says a data_path is needed unless the model type is one
    of the diagnostic ones."""
    training = (await _spec(client))["components"]["schemas"]["TrainingRequest"]
    needs_data, data_free = training["anyOf"]
    assert needs_data["required"] == ["data_path"]
    assert data_free["properties"]["model_type"]["enum"] == sorted(DATA_FREE_MODELS)
    assert (await client.post("/jobs/training", json={"model_type": "gpt"})).status_code == 422
    for body in ({"model_type": "noop"}, {"model_type": "gpt", "data_path": "/data/x.csv"}):
        assert (await client.post("/jobs/training", json=body)).status_code == 202, body


async def test_inference_documents_exactly_one_source_of_rows(client: AsyncClient) -> None:
    """Found by schemathesis: bodies with both ``inputs`` and ``data_path`` (or neither) were
    spec-valid and refused (422); the spec now says exactly one of them."""
    inference = (await _spec(client))["components"]["schemas"]["InferenceRequest"]
    assert [branch["required"] for branch in inference["oneOf"]] == [["inputs"], ["data_path"]]
    model = {"model_id": UNKNOWN}
    for body in ({**model, "inputs": [[1]], "data_path": "x.csv"}, model,
                 {**model, "inputs": None, "data_path": None}):
        r = await client.post("/jobs/inference", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", body
    for body in ({**model, "inputs": [[1]]}, {**model, "data_path": "x.csv", "inputs": None}):
        r = await client.post("/jobs/inference", json=body)  # valid: the model is unknown
        assert r.json()["error"]["code"] == "model_not_found", body


async def test_with_trusted_hosts_the_spec_documents_the_400(make_client: ClientFactory) -> None:
    async with make_client(trusted_hosts="aiq.example.com,aiq.test") as client:
        spec = await _spec(client)
        wrong = await client.get("/queues", headers={"Host": "evil.example.net"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_host"
    responses = spec["paths"]["/queues"]["get"]["responses"]
    assert "400" in responses and "invalid_host" in responses["400"]["description"]


async def test_requires_gpu_is_a_real_boolean(client: AsyncClient) -> None:
    """The spec says boolean; 0 or "yes" must not pass as one."""
    for value in (0, "yes"):
        response = await client.post("/jobs/training", json={
            "model_type": "noop", "requires_gpu": value})
        assert response.status_code == 422, value
        assert "requires_gpu" in response.text
