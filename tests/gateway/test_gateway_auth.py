"""Optional API-key auth: the same key guards HTTP, SSE and WebSocket; probes stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.live import live_gateway

KEY = "s3cret-key"
BODY = {"model_type": "noop"}


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GatewaySettings(redis_url=redis_url, api_key=KEY))  # type: ignore[arg-type]
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aiq") as c:
            yield c


async def test_requests_without_key_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs/training", json=BODY)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert (await client.get("/queues", headers={"X-API-Key": "wrong"})).status_code == 401


@pytest.mark.parametrize("how", ["bearer", "header", "query"])
async def test_each_way_of_presenting_the_key(client: httpx.AsyncClient, how: str) -> None:
    headers = {"bearer": {"Authorization": f"Bearer {KEY}"}, "header": {"X-API-Key": KEY},
               "query": {}}[how]
    params = {"api_key": KEY} if how == "query" else {}
    response = await client.post("/jobs/training", json=BODY, headers=headers, params=params)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    sse = await client.get(f"/jobs/{job_id}/events", headers={"X-API-Key": "nope"})
    assert sse.status_code == 401  # SSE is guarded like the rest


async def test_probe_and_page_stay_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/")).status_code == 200


async def test_websocket_needs_the_key(redis_url: str) -> None:
    async with live_gateway(redis_url, api_key=KEY) as gw:
        with pytest.raises(InvalidStatus) as refused:  # the handshake is refused over HTTP
            async with connect(gw.ws_url) as ws:
                await ws.recv()
        response = refused.value.response
        assert response.status_code == 401  # as over HTTP: the status and the JSON error
        assert orjson.loads(response.body)["error"]["code"] == "unauthorized"
        async with connect(f"{gw.ws_url}?api_key={KEY}") as ws:
            assert orjson.loads(await ws.recv())["type"] == "snapshot"


async def test_a_websocket_for_another_host_is_refused_over_http(redis_url: str) -> None:
    """TRUSTED_HOSTS guards the WebSocket as it does HTTP: the handshake gets 400
    invalid_host, with the JSON error."""
    async with live_gateway(redis_url, trusted_hosts="aiq.test") as gw:  # not 127.0.0.1
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gw.ws_url):
                pass
        response = refused.value.response
        assert response.status_code == 400
        assert orjson.loads(response.body)["error"]["code"] == "invalid_host"


async def test_the_api_docs_load_without_the_key(client: httpx.AsyncClient) -> None:
    """/docs fetches /openapi.json without the key: both are open (they describe the API, they
    hold no data); the API itself stays closed."""
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200 and "/jobs/training" in spec.json()["paths"]
    assert (await client.get("/jobs")).status_code == 401


@pytest.mark.parametrize("key", ["ключ-длинный", "has a space", "short", "tab\tinside-it"])
def test_a_key_no_header_can_carry_is_refused_at_start(key: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        GatewaySettings(api_key=key)  # type: ignore[arg-type]


def test_the_key_never_reaches_the_access_log(redis_url: str) -> None:
    """Browsers send the key in the query string (EventSource, WebSocket), and uvicorn's access
    log writes every path with its query: with API_KEY set, the value is replaced by ***."""
    import logging

    create_app(GatewaySettings(redis_url=redis_url, api_key=KEY))  # type: ignore[arg-type]
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET",
                               f"/jobs/x/events?last_event_id=1-0&api_key={KEY}", "1.1", 200),
                               None)
    for f in logging.getLogger("uvicorn.access").filters:
        f.filter(record)
    line = record.getMessage()
    assert KEY not in line and "api_key=***" in line and "last_event_id=1-0" in line
