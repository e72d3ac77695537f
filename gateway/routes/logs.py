"""``GET /jobs/{job_id}/logs``: a page of a command job's output lines, resumable by id.

The lines of the job's log stream after ``after`` (exclusive), at most ``limit``, with the
job's status read first in the same round trip: ``finished`` says no line can follow (its
worker writes every line before the job's final state). Other kinds of job have no lines. Live
lines also come as SSE ``log`` events on ``GET /jobs/{job_id}/events``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from gateway.deps import JobIdDep, ProducerDep, RedisDep
from gateway.errors import responses
from gateway.models import JobLogs
from schemas.status import JobStatus
from streams.errors import JobNotFound
from streams.events import normalize_id, parse_id
from streams.joblogs import log_line, read_page

router = APIRouter(prefix="/jobs", tags=["jobs"])
MAX_LIMIT = 10_000


def _stream_id(value: str) -> str:
    parse_id(value)  # ValueError: a 422 naming the parameter
    return normalize_id(value)


@router.get("/{job_id}/logs", response_model=JobLogs,
            responses=responses("job_not_found", "validation_error", "redis_unavailable"))
async def job_logs(
    job_id: JobIdDep, producer: ProducerDep, redis: RedisDep,
    after: Annotated[str, Query(pattern=r"^\d{1,20}(-\d{1,20})?$",
                                description="the id of the last line already read (`next` of "
                                "the previous page); 0-0: from the oldest line kept"),
                     AfterValidator(_stream_id)] = "0-0",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="lines at most")] = 1000,
) -> JobLogs:
    """A command job's output (stdout, stderr and the worker's `aiq` notes), line by line."""
    keys = producer.keys(await producer.worker_type_of(job_id))  # unknown job: 404
    page = await read_page(redis, keys, job_id, after, limit)
    if page.status is None:  # expired since worker_type_of found it
        raise JobNotFound(f"no job {job_id}")
    lines = [log_line(job_id, entry_id, fields) for entry_id, fields in page.lines]
    return JobLogs(job_id=job_id, status=JobStatus(page.status), lines=lines,
                   next=lines[-1].id if lines else after,
                   finished=page.finished and len(lines) < limit)
