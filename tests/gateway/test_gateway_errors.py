"""The error envelope at the edges: body limits, Redis outages, unexpected exceptions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from httpx import AsyncClient, Response

from aiq.redis_server import RedisServer
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import ClientFactory
from tests.gateway.payloads import SEED_BODY, submit

LIMIT = 4096


def _error(r: Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error: dict[str, object] = r.json()["error"]
    assert error["code"] == code
    return error


async def test_body_over_the_declared_limit_is_413(make_client: ClientFactory) -> None:
    big = {**SEED_BODY, "description": "x" * LIMIT}
    async with make_client(max_body_bytes=LIMIT) as client:
        r = await client.post("/jobs/training", json=big)
        _error(r, 413, "payload_too_large")
        assert r.json()["error"]["details"] == {"max_body_bytes": LIMIT}
        assert (await client.get("/jobs")).json()["count"] == 0
        small = await client.post("/jobs/training", json=SEED_BODY)
        assert small.status_code == 202


async def test_streamed_body_over_the_limit_is_413(make_client: ClientFactory) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model_type": "noop", "description": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}'

    async with make_client(max_body_bytes=LIMIT) as client:
        r = await client.post("/jobs/training", content=chunks(),
                              headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        _error(r, 413, "payload_too_large")


async def test_unknown_route_and_method_use_the_envelope(client: AsyncClient) -> None:
    _error(await client.get("/nope"), 404, "not_found")
    r = await client.delete("/jobs/training")
    _error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]


async def test_unexpected_exception_is_500_without_traceback(make_client: ClientFactory,
                                                             redis_url: str) -> None:
    app = create_app(GatewaySettings(redis_url=redis_url))

    async def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/boom", boom)
    async with make_client(app) as client:
        r = await client.get("/boom")
    error = _error(r, 500, "internal_error")
    assert "secret" not in r.text and "Traceback" not in r.text
    assert error["details"] is None


async def test_redis_down_is_503_fast_and_recovers(client: AsyncClient,
                                                   redis_server: RedisServer) -> None:
    job_id = await submit(client)
    redis_server.stop()
    try:
        for method, url in [("POST", "/jobs/training"), ("GET", f"/jobs/{job_id}/status"),
                            ("GET", "/jobs"), ("POST", f"/jobs/{job_id}/cancel"),
                            ("GET", "/queues"), ("GET", "/workers")]:
            started = time.monotonic()
            r = await client.request(method, url, json={"model_type": "noop"})
            assert time.monotonic() - started < 2, url
            _error(r, 503, "redis_unavailable")
            assert r.headers["retry-after"] == "1"
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "redis": "unavailable",
                                 "redis_version": None}
    finally:
        redis_server.start()
    # The same app and client, no restart: the pool reconnects on the next command.
    assert (await client.get("/health")).status_code == 200
    assert (await client.get(f"/jobs/{job_id}/status")).json()["status"] == "queued"
    assert (await client.post("/jobs/training", json={"model_type": "noop"})).status_code == 202


async def test_first_request_after_a_redis_restart_succeeds(client: AsyncClient,
                                                            redis_server: RedisServer) -> None:
    """Pooled connections die with the server; the next request must not pay for that."""
    job_id = await submit(client)
    for method, url, ok in [("POST", "/jobs/training", 202), ("GET", f"/jobs/{job_id}", 200),
                            ("GET", "/jobs", 200), ("GET", "/queues", 200),
                            ("GET", "/workers", 200), ("GET", "/health", 200)]:
        redis_server.restart()
        r = await client.request(method, url, json={"model_type": "noop"})
        assert r.status_code == ok, (url, r.text)


async def test_trusted_hosts_refuse_other_host_names(make_client: ClientFactory) -> None:
    """With TRUSTED_HOSTS set, a request for another Host (DNS rebinding: a page's own name
    pointed at the gateway) gets 400 invalid_host instead of the API."""
    async with make_client(trusted_hosts="aiq.test, *.corp.example") as client:
        assert (await client.get("/health")).status_code == 200  # base_url http://aiq.test
        for host in ("api.corp.example", "AIQ.TEST:8000"):
            assert (await client.get("/queues", headers={"host": host})).status_code == 200
        for host in ("evil.example", "corp.example.evil", "aiq.test.evil"):
            r = await client.get("/queues", headers={"host": host})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host", host
    async with make_client() as client:  # not set: any Host
        assert (await client.get("/queues", headers={"host": "anything"})).status_code == 200
