"""Health: 200 when Redis answers, 503 (same shape) when it does not."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisClusterException, RedisError

from gateway.deps import RedisDep
from gateway.models import Health
from streams.connection import server_version
from streams.errors import UNAVAILABLE

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "Redis is unavailable"}})
async def health(redis: RedisDep) -> Health | JSONResponse:
    """Liveness and readiness in one: PING (refused while Redis loads) and its version."""
    try:
        version = await server_version(redis)
    except (*UNAVAILABLE, RedisError, RedisClusterException):
        down = Health(status="degraded", redis="unavailable")
        return JSONResponse(down.model_dump(), status_code=503)
    return Health(status="ok", redis="ok", redis_version=version)
