"""Dependency aliases for route signatures (``Annotated``, as in the FastAPI template)."""

from __future__ import annotations

import re
from typing import Annotated, cast

from fastapi import Depends, Path, Query
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from gateway.errors import ApiError
from gateway.hub import Hub
from gateway.settings import GatewaySettings
from schemas.catalogue import CATALOGUE
from schemas.requests import JOB_ID_PATTERN
from streams.producer import Producer

_JOB_ID = re.compile(JOB_ID_PATTERN)


# HTTPConnection, not Request: the same dependencies serve WebSocket routes. Every dependency is
# `async def`: FastAPI runs a plain `def` one in the thread pool, a hop per request (issue #15).
async def get_settings(conn: HTTPConnection) -> GatewaySettings:
    return cast(GatewaySettings, conn.app.state.settings)


async def get_redis(conn: HTTPConnection) -> Redis:
    return cast(Redis, conn.app.state.redis)


def producer_of(conn: HTTPConnection) -> Producer:
    """The app's producer, for a route that reads its request itself (no dependency pass)."""
    return cast(Producer, conn.app.state.producer)


async def get_producer(conn: HTTPConnection) -> Producer:
    return producer_of(conn)


async def get_hub(conn: HTTPConnection) -> Hub:
    return cast(Hub, conn.app.state.hub)


async def job_id_path(
    job_id: Annotated[str, Path(description="a job id, `job_<uuid>`",
                                examples=["job_12345678-1234-1234-1234-123456789012"])],
) -> str:
    """A malformed id names no job: 404, like an unknown one (never 422)."""
    if not _JOB_ID.fullmatch(job_id):
        raise ApiError(404, "job_not_found", f"no job {job_id[:80]!r}")
    return job_id


async def worker_type_filter(
    worker_type: Annotated[str | None, Query(description="only jobs of this worker type",
                                             examples=sorted(CATALOGUE),
                                             json_schema_extra={"enum": sorted(CATALOGUE)})
                           ] = None,
) -> str | None:
    if worker_type is not None and worker_type not in CATALOGUE:
        known = ", ".join(sorted(CATALOGUE))
        message = f"unknown worker type {worker_type[:80]!r}; known: {known}"
        raise ApiError(422, "validation_error", f"query.worker_type: {message}",
                       [{"field": "query.worker_type", "message": message, "type": "enum"}])
    return worker_type


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
ProducerDep = Annotated[Producer, Depends(get_producer)]
HubDep = Annotated[Hub, Depends(get_hub)]
JobIdDep = Annotated[str, Depends(job_id_path)]
WorkerTypeFilter = Annotated[str | None, Depends(worker_type_filter)]
