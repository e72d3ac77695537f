"""``GET /metrics``: Prometheus' text format, every catalogue type's series, the numbers Redis
holds, no job ids, ``aiq_redis_up 0`` when Redis is down, and API_KEY / METRICS_PUBLIC."""

from __future__ import annotations

import time

from httpx import AsyncClient, Response
from prometheus_client.parser import text_string_to_metric_families

from aiq.redis_server import RedisServer
from schemas.catalogue import CATALOGUE
from streams.snapshot import OUTCOMES
from tests.gateway.conftest import ClientFactory
from tests.gateway.payloads import submit

KEY = "metrics-key-0123"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(response: Response) -> Samples:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(got: Samples, name: str, **labels: str) -> float:
    return got[(name, frozenset(labels.items()))]


async def test_every_worker_type_and_kind_has_its_series(client: AsyncClient) -> None:
    got = samples(await client.get("/metrics"))
    assert value(got, "aiq_redis_up") == 1
    for wt in CATALOGUE:
        assert value(got, "aiq_workers", worker_type=wt) == 0
        assert value(got, "aiq_delayed", worker_type=wt) == 0
        assert value(got, "aiq_fenced_writes_total", worker_type=wt) == 0
        for kind in ("training", "inference"):
            for name in ("aiq_queue_length", "aiq_pending", "aiq_oldest_pending_age_seconds",
                         "aiq_pending_owner_idle_seconds", "aiq_dead_letters",
                         "aiq_jobs_submitted_total"):
                assert value(got, name, worker_type=wt, kind=kind) == 0
            for outcome in OUTCOMES:  # present from the start, so rate() sees the first job
                assert value(got, "aiq_jobs_total", worker_type=wt, kind=kind,
                             outcome=outcome) == 0
    names = {name for name, _ in got}
    assert names == {"aiq_redis_up", "aiq_metrics_read_seconds", "aiq_queue_length",
                     "aiq_queue_length_high", "aiq_pending", "aiq_oldest_pending_age_seconds",
                     "aiq_pending_owner_idle_seconds", "aiq_dead_letters",
                     "aiq_delayed", "aiq_workers", "aiq_jobs_total", "aiq_jobs_submitted_total",
                     "aiq_fenced_writes_total"}
    assert len(got) == 2 + 42 * len(CATALOGUE)  # 42 series per worker type, whatever runs


async def test_the_numbers_follow_the_queue_and_no_job_id_shows(client: AsyncClient) -> None:
    jobs = [await submit(client) for _ in range(3)]
    assert (await client.post(f"/jobs/{jobs[0]}/cancel")).status_code == 200
    response = await client.get("/metrics")
    got = samples(response)
    labels = {"worker_type": "diagnostic", "kind": "training"}
    assert value(got, "aiq_queue_length", **labels) == 2
    assert value(got, "aiq_pending", **labels) == 0
    assert value(got, "aiq_jobs_submitted_total", **labels) == 3
    assert value(got, "aiq_jobs_total", outcome="cancelled", **labels) == 1
    assert value(got, "aiq_jobs_total", outcome="succeeded", **labels) == 0
    assert not any(job_id in response.text for job_id in jobs)
    assert "job_" not in response.text


async def test_redis_down_answers_with_aiq_redis_up_0(client: AsyncClient,
                                                       redis_server: RedisServer) -> None:
    """200 and ``aiq_redis_up 0``, fast, and no queue series (an outage is not an empty
    queue); back to normal with Redis, on the same app."""
    redis_server.stop()
    try:
        started = time.monotonic()
        response = await client.get("/metrics")
        assert time.monotonic() - started < 2
        got = samples(response)
        assert value(got, "aiq_redis_up") == 0
        assert {name for name, _ in got} == {"aiq_redis_up", "aiq_metrics_read_seconds"}
    finally:
        redis_server.start()
    assert value(samples(await client.get("/metrics")), "aiq_redis_up") == 1


async def test_api_key_guards_metrics_unless_metrics_public(make_client: ClientFactory) -> None:
    async with make_client(api_key=KEY) as client:
        assert (await client.get("/metrics")).status_code == 401
        samples(await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}))
        spec = (await client.get("/openapi.json")).json()
        assert "401" in spec["paths"]["/metrics"]["get"]["responses"]
    async with make_client(api_key=KEY, metrics_public=True) as client:
        samples(await client.get("/metrics"))
        assert (await client.get("/queues")).status_code == 401  # the rest stays guarded
        spec = (await client.get("/openapi.json")).json()
        assert "401" not in spec["paths"]["/metrics"]["get"]["responses"]
        assert "security" not in spec["paths"]["/metrics"]["get"]
