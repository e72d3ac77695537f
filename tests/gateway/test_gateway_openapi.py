"""The OpenAPI spec says what the server does: real responses, validated against the spec the
gateway serves (schemathesis' checks, as in test_gateway_schemathesis.py), for the cases the
property-based run found the two disagreeing."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from httpx import AsyncClient

from schemas.events import EventType
from tests.gateway.payloads import submit

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
    assert event["properties"]["event"]["enum"] == [t.value for t in EventType]
