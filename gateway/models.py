"""Response shapes that exist only over HTTP (the domain models live in schemas/)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.events import LogLine
from schemas.records import JobStatusView
from schemas.status import JobStatus
from schemas.workers import WorkerInfo


class JobList(BaseModel):
    jobs: list[JobStatusView]
    count: int


class CancelResult(BaseModel):
    job_id: str
    status: Literal["cancelled", "cancelling"] = Field(
        description="cancelled: ended now; cancelling: running, stops at its next step/epoch"
    )


class WorkerList(BaseModel):
    workers: list[WorkerInfo]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    redis: Literal["ok", "unavailable"]
    redis_version: str | None = None


class BatchJob(BaseModel):
    """One job of a batch submit's answer."""

    job_id: str
    status: JobStatus
    worker_type: str
    duplicate: bool = Field(description="true when its Idempotency-Key matched an earlier job "
                            "(or a job earlier in this batch): no new job was queued for it")


class BatchSubmitted(BaseModel):
    """Answer to a batch submit: every job in the order of the request."""

    jobs: list[BatchJob]
    queued: int = Field(description="jobs newly queued by this call")
    duplicates: int = Field(description="jobs whose Idempotency-Key matched an earlier job")


class JobLogs(BaseModel):
    """A page of a command job's output lines (GET /jobs/{id}/logs)."""

    job_id: str
    status: JobStatus
    lines: list[LogLine]
    next: str = Field(description="pass as `after` for the next page: the last line's id, or "
                      "`after` itself when there was none")
    finished: bool = Field(description="the job had ended when this page was read and the page "
                           "holds its last lines: nothing more will come")
