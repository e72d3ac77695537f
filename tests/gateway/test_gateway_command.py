"""POST /jobs/command: refused (403) unless the gateway has an API key and command jobs on for
the routed type; every bad field a 422 naming it; an accepted job is a flat, readable entry on
the type's command stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from schemas.status import JobKind
from streams.keys import QueueKeys
from tests.gateway.conftest import ClientFactory

KEY = "s3cret-key"
AUTH = {"X-API-Key": KEY}
ON = {"api_key": KEY, "command_worker_types": "diagnostic"}
KEYS = QueueKeys("diagnostic")
BODY: dict[str, Any] = {"entrypoint": ["python", "-c", "print('hi')"]}


async def post(client: AsyncClient, body: Any, **headers: str) -> Any:
    return await client.post("/jobs/command", json=body, headers={**AUTH, **headers})


@pytest.mark.parametrize(("settings", "why"), [
    ({"command_worker_types": "diagnostic"}, "API_KEY"),
    ({"api_key": KEY}, "COMMAND_WORKER_TYPES is empty"),
])
async def test_refused_with_403_unless_key_and_types(make_client: ClientFactory,
                                                     settings: dict[str, Any], why: str) -> None:
    async with make_client(**settings) as client:
        response = await post(client, BODY)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "command_jobs_disabled" and why in error["message"]


async def test_a_type_without_command_jobs_is_refused(make_client: ClientFactory) -> None:
    async with make_client(**ON) as client:
        forced = await post(client, {**BODY, "framework_override": "sklearn"})
        gpu = await post(client, {**BODY, "requires_gpu": True})
    assert forced.status_code == 403 and "'sklearn'" in forced.json()["error"]["message"]
    assert gpu.status_code == 403 and "GPU" in gpu.json()["error"]["message"]


@pytest.mark.parametrize(("change", "field"), [
    ({"entrypoint": []}, "body.entrypoint"),
    ({"entrypoint": [""]}, "body.entrypoint"),
    ({"entrypoint": "python train.py"}, "body.entrypoint"),
    ({"entrypoint": ["python", "a\u0000b"]}, "body.entrypoint"),
    ({"entrypoint": ["x"] * 300}, "body.entrypoint"),
    ({"env": {"AIQ_OUTPUT_DIR": "/tmp"}}, "body.env"),
    ({"env": {"aiq_job_id": "x"}}, "body.env"),
    ({"env": {"1BAD": "x"}}, "body.env"),
    ({"env": {"OK": 1}}, "body.env.OK"),
    ({"working_dir": "../secrets"}, "body.working_dir"),
    ({"working_dir": "s3://bucket/code.tar.gz"}, "body.working_dir"),
    ({"working_dir": "artifact://job_x/code.txt"}, "body.working_dir"),
    ({"working_dir": "artifact://../code.zip"}, "body.working_dir"),
    ({"requirements": ["--index-url=https://evil"]}, "body.requirements[0]"),
    ({"requirements": []}, "body.requirements"),
    ({"gpu_memory_mb": 0}, "body.gpu_memory_mb"),
    ({"timeout_s": -1}, "body.timeout_s"),
    ({"max_retries": True}, "body.max_retries"),
    ({"requires_gpu": "yes"}, "body.requires_gpu"),
    ({"shell": True}, "body.shell"),
])
async def test_bad_fields_are_422_naming_them(make_client: ClientFactory, change: dict[str, Any],
                                             field: str) -> None:
    async with make_client(**ON) as client:
        response = await post(client, {**BODY, **change})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]], error


async def test_routing_errors_name_their_field(make_client: ClientFactory) -> None:
    async with make_client(**ON) as client:
        unknown = await post(client, {**BODY, "framework_override": "quantum"})
        cpu = await post(client, {**BODY, "framework_override": "diagnostic",
                                  "requires_gpu": True})
    for response in (unknown, cpu):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "routing_error"
    assert unknown.json()["error"]["details"][0]["field"] == "body.framework_override"


async def test_a_body_over_the_limit_is_413(make_client: ClientFactory) -> None:
    async with make_client(**ON, max_body_bytes=2048) as client:
        response = await post(client, {**BODY, "description": "x" * 1900,
                                       "env": {"A": "y" * 500}})
    assert response.status_code == 413


async def test_accepted_job_is_a_flat_entry_on_the_command_stream(
        make_client: ClientFactory, redis: Redis) -> None:
    body = {**BODY, "env": {"SEED": "7"}, "requirements": ["numpy<2"],
            "working_dir": "project", "gpu_memory_mb": 512, "timeout_s": 30, "max_retries": 0,
            "description": "my script"}
    async with make_client(**ON) as client:
        response = await post(client, body, **{"Idempotency-Key": "cmd-1"})
        again = await post(client, body, **{"Idempotency-Key": "cmd-1"})
        other = await post(client, {**body, "env": {}}, **{"Idempotency-Key": "cmd-1"})
        assert response.status_code == 202, response.text
        job = response.json()
        view = (await client.get(f"/jobs/{job['job_id']}", headers=AUTH)).json()
    assert job["kind"] == "command" and job["worker_type"] == "diagnostic"
    assert job["stream"] == "ai:command:{diagnostic}:queue" == KEYS.stream(JobKind.COMMAND)
    assert again.status_code == 200 and again.json()["job_id"] == job["job_id"]
    assert other.status_code == 409
    [(_, fields)] = await redis.xrange(KEYS.stream(JobKind.COMMAND))
    assert fields["kind"] == "command" and fields["model_type"] == "command"
    assert orjson.loads(fields["entrypoint"]) == body["entrypoint"]
    assert orjson.loads(fields["env"]) == {"SEED": "7"}
    assert fields["working_dir"] == "project" and fields["gpu_mem_mb"] == "512"
    assert "hyperparameters" not in fields  # a command entry carries only its own fields
    assert await redis.xlen(KEYS.stream(JobKind.TRAINING)) == 0
    assert view["entrypoint"] == body["entrypoint"] and view["env"] == {"SEED": "7"}
    assert view["requirements"] == ["numpy<2"] and view["gpu_mem_mb"] == 512
    assert view["links"]["logs"] == f"/jobs/{job['job_id']}/logs"


async def test_the_first_matching_enabled_type_is_the_default(make_client: ClientFactory) -> None:
    async with make_client(api_key=KEY, command_worker_types="sklearn,diagnostic") as client:
        first = await post(client, BODY)
        forced = await post(client, {**BODY, "framework_override": "diagnostic"})
    assert first.json()["worker_type"] == "sklearn"
    assert forced.json()["worker_type"] == "diagnostic"


async def test_cancel_of_a_queued_command_job(make_client: ClientFactory, redis: Redis) -> None:
    async with make_client(**ON) as client:
        job_id = (await post(client, BODY)).json()["job_id"]
        cancel = await client.post(f"/jobs/{job_id}/cancel", headers=AUTH)
    assert cancel.json()["status"] == "cancelled"
    assert await redis.xlen(KEYS.stream(JobKind.COMMAND)) == 0  # never delivered: deleted
    assert await redis.hget(KEYS.stats, "command:cancelled") == "1"


def test_a_bad_name_in_the_setting_stops_the_gateway_at_start() -> None:
    from pydantic import ValidationError

    from gateway.settings import GatewaySettings

    with pytest.raises(ValidationError, match="'Quantum!' is not a worker type name"):
        GatewaySettings(command_worker_types="diagnostic, Quantum!")
    # a plugin's type this gateway lacks is allowed: its workers announce it
    assert GatewaySettings(command_worker_types="team-xgb").command_types == ("team-xgb",)
    assert GatewaySettings(command_worker_types=" sklearn,diagnostic,sklearn ").command_types \
        == ("sklearn", "diagnostic")
