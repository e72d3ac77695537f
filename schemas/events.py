"""Job events as written by the Lua scripts into the per-job and per-type event streams.

Stream entry fields: ``type``, ``job_id``, ``ts`` (ms), ``status`` and ``data`` (JSON). The parsed
form is a discriminated union on ``type``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.status import JobStatus


class EventType(StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    STARTED = "started"
    PROGRESS = "progress"
    RETRYING = "retrying"
    REQUEUED = "requeued"
    CANCEL_REQUESTED = "cancel_requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_EVENTS = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    id: str = Field(default="", description="Redis stream entry id (SSE id)")
    job_id: str
    ts: int = Field(description="server time, ms since epoch")
    status: JobStatus


class QueuedEvent(_Event):
    type: Literal[EventType.QUEUED] = EventType.QUEUED
    position: int = 0
    worker_type: str = ""


class WaitingDevice(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    index: int
    name: str = ""
    total_mb: int
    free_mb: int = Field(description="free as NVML reports it")
    reserved_mb: int = Field(default=0, description="promised to jobs this worker started whose "
                             "memory NVML does not show yet")
    usable_mb: int = Field(description="what admission may still give out: free - reserved - "
                           "headroom")


class WaitingEvent(_Event):
    """A worker holds the job (status stays queued) until its GPU memory estimate fits. Written
    once per change of reason, not per check."""

    type: Literal[EventType.WAITING] = EventType.WAITING
    reason: str = Field(description="gpu_memory: no device has room for the estimate; "
                        "behind_waiting_job: an earlier job of this worker waits first")
    message: str = ""
    worker: str = ""
    needed_mb: int = 0
    estimate_source: str = Field(default="", description="request | peak | table")
    devices: list[WaitingDevice] = Field(default_factory=list)
    behind: str | None = Field(default=None, description="the job waiting ahead of this one")


class StartedEvent(_Event):
    type: Literal[EventType.STARTED] = EventType.STARTED
    worker: str
    attempt: int = 1
    deliveries: int = 1
    resumed: bool = Field(default=False, description="true when the job was reclaimed from a "
                          "worker that died (it resumes from its last checkpoint if it has one)")


class ProgressEvent(_Event):
    type: Literal[EventType.PROGRESS] = EventType.PROGRESS
    stage: str = ""
    percent: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    eta_s: float | None = None
    message: str = ""


class RetryingEvent(_Event):
    type: Literal[EventType.RETRYING] = EventType.RETRYING
    attempt: int
    delay_ms: int
    error: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] | None = Field(default=None, description="what the next attempt "
                                             "changes, e.g. a halved batch_size after CUDA OOM")


class RequeuedEvent(_Event):
    type: Literal[EventType.REQUEUED] = EventType.REQUEUED
    reason: str = ""


class CancelRequestedEvent(_Event):
    type: Literal[EventType.CANCEL_REQUESTED] = EventType.CANCEL_REQUESTED


class SucceededEvent(_Event):
    type: Literal[EventType.SUCCEEDED] = EventType.SUCCEEDED
    result: dict[str, Any] = Field(default_factory=dict)


class FailedEvent(_Event):
    type: Literal[EventType.FAILED] = EventType.FAILED
    error: dict[str, Any] = Field(default_factory=dict)


class CancelledEvent(_Event):
    type: Literal[EventType.CANCELLED] = EventType.CANCELLED


JobEvent = Annotated[
    QueuedEvent
    | WaitingEvent
    | StartedEvent
    | ProgressEvent
    | RetryingEvent
    | RequeuedEvent
    | CancelRequestedEvent
    | SucceededEvent
    | FailedEvent
    | CancelledEvent,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)


class LogLine(BaseModel):
    """One line of a command job's output (its log stream, not its events stream): an SSE
    ``log`` event, and an item of ``GET /jobs/{id}/logs``."""

    model_config = ConfigDict(frozen=True)
    type: Literal["log"] = "log"
    job_id: str
    id: str = Field(description="the line's entry id in the job's log stream (resume after it)")
    ts: int = Field(description="server time the worker wrote it, ms since epoch")
    stream: str = Field(description="stdout, stderr, or aiq: the worker's own notes (the "
                        "environment's build, how the program ended)")
    line: str = Field(description="the text, without its newline (cut at LOG_LINE_MAX_BYTES "
                      "with a marker; bytes that are not UTF-8 replaced)")


def parse_event(entry_id: str, fields: dict[str, str]) -> JobEvent:
    """Build the typed event from a stream entry's flat fields."""
    data = orjson.loads(fields.get("data") or "{}")
    payload = {**data, **{k: v for k, v in fields.items() if k != "data"}, "id": entry_id}
    return _ADAPTER.validate_python(payload)
