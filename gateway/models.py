"""Response shapes that exist only over HTTP (the domain models live in schemas/)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.records import JobStatusView
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
