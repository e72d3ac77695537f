"""``GET /metrics``: Prometheus' text format (gateway/metrics.py says what is in it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from gateway.deps import RedisDep, SettingsDep
from gateway.metrics import CONTENT_TYPE, scrape

router = APIRouter(tags=["operations"])

_DOC = ("queues, workers and job counters of every worker type, read from Redis now; "
        "`aiq_redis_up 0` (and no queue series) when Redis does not answer")


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": _DOC}})
async def metrics(redis: RedisDep, settings: SettingsDep) -> Response:
    """Prometheus metrics (docs/MONITORING.md lists each one)."""
    body = await scrape(redis, settings.redis_prefix)
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
