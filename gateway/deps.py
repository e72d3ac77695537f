"""Dependency aliases for route signatures (``Annotated``, as in the FastAPI template)."""

from __future__ import annotations

import re
from typing import Annotated, cast

from fastapi import Depends, Header, Path, Query
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from gateway.errors import ApiError
from gateway.hub import Hub
from gateway.settings import GatewaySettings
from schemas.catalogue import CATALOGUE
from schemas.requests import IDEMPOTENCY_KEY_PATTERN, JOB_ID_PATTERN
from streams.producer import Producer

_JOB_ID = re.compile(JOB_ID_PATTERN)


# HTTPConnection, not Request: the same dependencies serve WebSocket routes.
def get_settings(conn: HTTPConnection) -> GatewaySettings:
    return cast(GatewaySettings, conn.app.state.settings)


def get_redis(conn: HTTPConnection) -> Redis:
    return cast(Redis, conn.app.state.redis)


def get_producer(conn: HTTPConnection) -> Producer:
    return cast(Producer, conn.app.state.producer)


def get_hub(conn: HTTPConnection) -> Hub:
    return cast(Hub, conn.app.state.hub)


def job_id_path(
    job_id: Annotated[str, Path(description="a job id, `job_<uuid>`",
                                examples=["job_12345678-1234-1234-1234-123456789012"])],
) -> str:
    """A malformed id names no job: 404, like an unknown one (never 422)."""
    if not _JOB_ID.fullmatch(job_id):
        raise ApiError(404, "job_not_found", f"no job {job_id[:80]!r}")
    return job_id


def worker_type_filter(
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
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, pattern=IDEMPOTENCY_KEY_PATTERN,
           description="retrying a submit with the same key returns the first job (200, "
                       "`duplicate: true`) instead of creating another; keys live "
                       "IDEMPOTENCY_TTL_S seconds; 1-200 visible ASCII characters"),
]
