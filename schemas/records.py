"""Stored shapes: the stream entry a worker reads, the job record hash, and the public views.

Both the entry and the record are flat string fields so ``redis-cli XRANGE`` and ``HGETALL`` read
naturally; only nested values (hyperparameters, inputs, result, error, progress) are JSON.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

from schemas.catalogue import KNOWN_MODEL_TYPES
from schemas.requests import JobId
from schemas.status import COMMAND_MODEL_TYPE, JobKind, JobStatus, Priority

# Fields of a stream entry, in the order they are written. The requeue script copies exactly these
# from the record into a fresh entry, so a retried job carries the same spec. An inference job's
# inline ``inputs`` (up to a request body's size) are stored once, in the record only: start.lua
# hands them to the worker that starts the job.
ENTRY_FIELDS: tuple[str, ...] = (
    "job_id", "kind", "model_type", "attempt", "gpu_mem_mb", "data_path",
    "hyperparameters", "model_id", "parameters", "timeout_s", "max_retries", "priority",
)
# A requeued job's entry (retry promotion, hand-back) also carries ``overrides``: what the
# worker changed for the next attempt (JSON, see ``JobMessage.overrides``). Never set at submit.
REQUEUE_FIELDS: tuple[str, ...] = (*ENTRY_FIELDS, "overrides")
# A command job's entry (POST /jobs/command): its argv, requirements and env as JSON, the rest
# flat. Its own list, so training and inference entries carry no empty command fields.
COMMAND_ENTRY_FIELDS: tuple[str, ...] = (
    "job_id", "kind", "model_type", "attempt", "gpu_mem_mb", "entrypoint", "working_dir",
    "requirements", "env", "timeout_s", "max_retries", "priority",
)
COMMAND_REQUEUE_FIELDS: tuple[str, ...] = (*COMMAND_ENTRY_FIELDS, "overrides")
# A finished job's status -> the field its result key holds (JSON).
OUTCOME_FIELDS = {"succeeded": "result", "failed": "error"}
_COMMAND_JSON = ("entrypoint", "requirements", "env")
_JSON_FIELDS = ("hyperparameters", "inputs", "parameters", "result", "error", "progress",
                "overrides", "waiting", *_COMMAND_JSON)


def entry_fields_of(kind: JobKind) -> tuple[str, ...]:
    """The fields of a stream entry of ``kind``, in the order they are written."""
    return COMMAND_ENTRY_FIELDS if kind is JobKind.COMMAND else ENTRY_FIELDS


def requeue_fields_of(kind: JobKind) -> tuple[str, ...]:
    """What the requeue scripts (promote, handback) copy from the record into a fresh entry."""
    return COMMAND_REQUEUE_FIELDS if kind is JobKind.COMMAND else REQUEUE_FIELDS


def _loads(raw: str | None, default: Any) -> Any:
    return default if raw in (None, "") else orjson.loads(raw)


class JobMessage(BaseModel):
    """A stream entry parsed and validated by the worker. Malformed entries fail here."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    job_id: JobId
    kind: JobKind
    model_type: str
    attempt: int = Field(default=1, ge=1)
    gpu_mem_mb: int | None = None
    data_path: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    model_id: str | None = None
    inputs: list[list[Any]] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)  # the job's own; '' (absent): unset
    priority: Priority = Priority.NORMAL  # its lane; '' (absent): normal
    # Set by a worker for the next attempt, e.g. after CUDA OOM:
    # {"hyperparameters": {"batch_size": 16}, "oom_retries": [{"batch_size": 64, ...}, ...]}
    overrides: dict[str, Any] = Field(default_factory=dict)
    # A command job's (kind command): argv, where it runs, its uv environment, its env vars.
    entrypoint: list[str] | None = None
    working_dir: str | None = None
    requirements: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("model_type")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in KNOWN_MODEL_TYPES and value != COMMAND_MODEL_TYPE:
            raise ValueError(f"unknown model type {value!r}")
        return value

    @model_validator(mode="after")
    def _command_has_argv(self) -> JobMessage:
        if (self.kind is JobKind.COMMAND) != (self.model_type == COMMAND_MODEL_TYPE):
            raise ValueError(f"model type {self.model_type!r} is not one of a {self.kind} job")
        if self.kind is JobKind.COMMAND and not self.entrypoint:
            raise ValueError("a command job needs an entrypoint")
        return self

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> JobMessage:
        """Parse entry fields; raises ValueError (with the reason) on a malformed entry."""
        try:
            data: dict[str, Any] = {k: v for k, v in fields.items() if v != ""}
            for name in ("hyperparameters", "inputs", "parameters", "overrides",
                         *_COMMAND_JSON):
                if name in data:
                    data[name] = orjson.loads(data[name])
            return cls.model_validate(data)
        except (ValidationError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"malformed job entry: {exc}".replace("\n", " ")[:500]) from exc

    def with_inputs(self, raw: str) -> JobMessage:
        """The message with the record's inline ``inputs`` (JSON); raises ValueError when they
        are not rows."""
        if not raw:
            return self
        try:
            rows = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"the job's inputs are not JSON: {exc}") from exc
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ValueError("the job's inputs are not a list of rows")
        return self.model_copy(update={"inputs": rows})

    def with_overrides(self) -> JobMessage:
        """The message the framework runs: ``overrides["hyperparameters"]`` applied on top of the
        submitted hyperparameters (the same message when there are none)."""
        changed = self.overrides.get("hyperparameters")
        if not changed:
            return self
        return self.model_copy(update={"hyperparameters": {**self.hyperparameters, **changed}})


def entry_fields(record: dict[str, str]) -> dict[str, str]:
    return {k: record.get(k, "") for k in ENTRY_FIELDS}


class ErrorDetail(BaseModel):
    # Extra fields pass through: a command job's error adds exit_code, signal, stderr_tail.
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    retryable: bool = False


class JobRecord(BaseModel):
    """The job hash ``HGETALL ai:{type}:job:<id>``, typed."""

    model_config = ConfigDict(protected_namespaces=())

    job_id: str
    kind: JobKind
    worker_type: str
    model_type: str
    status: JobStatus
    description: str = ""
    data_path: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    model_id: str | None = None
    inputs: list[list[Any]] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    requires_gpu: bool = False
    gpu_mem_mb: int | None = None
    timeout_s: float | None = None
    max_retries: int | None = None
    priority: Priority = Priority.NORMAL
    attempt: int = 1
    deliveries: int = 0
    worker: str | None = None
    entry_id: str | None = None
    created_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    result: dict[str, Any] | None = None
    error: ErrorDetail | None = None
    progress: dict[str, Any] | None = None
    cancel_requested: bool = False
    overrides: dict[str, Any] | None = None  # what a worker changed for a retry (CUDA OOM)
    waiting: dict[str, Any] | None = None  # why a queued job waits (GPU admission), latest
    entrypoint: list[str] | None = None  # command jobs: as submitted
    working_dir: str | None = None
    requirements: list[str] | None = None
    env: dict[str, str] | None = None

    @classmethod
    def from_hash(cls, raw: dict[str, str], outcome: str | None = None) -> JobRecord:
        """``outcome``: the job's result key (its result when it succeeded, its error when it
        failed), kept out of the hash so that the hash stays small (see streams/keys.py)."""
        data: dict[str, Any] = {k: v for k, v in raw.items() if v != ""}
        field = OUTCOME_FIELDS.get(data.get("status", ""))
        if outcome and field:
            data[field] = outcome
        for name in _JSON_FIELDS:
            if name in data:
                data[name] = _loads(data[name], None)
        for name in ("requires_gpu", "cancel_requested"):
            data[name] = data.get(name) == "1"
        return cls.model_validate(data)


class JobLinks(BaseModel):
    self: str
    status: str
    events: str
    cancel: str
    logs: str


def links_for(job_id: str) -> JobLinks:
    return JobLinks(
        self=f"/jobs/{job_id}",
        status=f"/jobs/{job_id}/status",
        events=f"/jobs/{job_id}/events",
        cancel=f"/jobs/{job_id}/cancel",
        logs=f"/jobs/{job_id}/logs",
    )


class JobSubmitted(BaseModel):
    """Answer to a submit (202)."""

    job_id: str
    status: JobStatus
    worker_type: str
    kind: JobKind
    stream: str = Field(description="the Redis stream the job was added to")
    duplicate: bool = Field(default=False, description="true when an Idempotency-Key matched")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status_url(self) -> str:
        """Where the gateway answers the job's status (relative to its base URL)."""
        return f"/jobs/{self.job_id}/status"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def events_url(self) -> str:
        """The job's live events (SSE)."""
        return f"/jobs/{self.job_id}/events"


class JobStatusView(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    job_id: str
    status: JobStatus
    kind: JobKind
    worker_type: str
    model_type: str
    progress: dict[str, Any] | None = None
    attempt: int
    error: ErrorDetail | None = None
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    result: dict[str, Any] | None = None
    waiting: dict[str, Any] | None = Field(default=None, description="why a queued job is not "
                                           "started yet (GPU memory); absent once it starts")


class JobView(JobStatusView):
    """Full public record."""

    description: str = ""
    data_path: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    model_id: str | None = None
    requires_gpu: bool = False
    gpu_mem_mb: int | None = None
    timeout_s: float | None = Field(default=None, description="as submitted, lowered to the "
                                    "worker type's MAX_JOB_TIMEOUT_S where its workers "
                                    "published it (absent: the type's JOB_TIMEOUT_S)")
    max_retries: int | None = Field(default=None, description="as submitted, lowered to the "
                                    "worker type's MAX_RETRIES where its workers published it "
                                    "(absent: MAX_RETRIES); the job is retried at most "
                                    "min(this, MAX_RETRIES) times")
    priority: Priority = Field(default=Priority.NORMAL, description="the lane the job waits "
                               "in: high is read first (normal where the worker type's "
                               "MAX_PRIORITY is normal)")
    deliveries: int = 0
    worker: str | None = None
    cancel_requested: bool = False
    overrides: dict[str, Any] | None = Field(default=None, description="what a worker changed "
                                             "for a retry, e.g. a halved batch_size after CUDA "
                                             "OOM (hyperparameters stay as submitted)")
    entrypoint: list[str] | None = Field(default=None, description="command jobs: the argv run")
    working_dir: str | None = Field(default=None, description="command jobs: a path under the "
                                    "data root, or an artifact:// archive")
    requirements: list[str] | None = Field(default=None, description="command jobs: the uv "
                                           "environment's requirements, when given")
    env: dict[str, str] | None = Field(default=None, description="command jobs: the env vars "
                                       "given (stored in Redis as sent: pass no secrets)")
    links: JobLinks


def status_view(rec: JobRecord) -> JobStatusView:
    return JobStatusView.model_validate(rec.model_dump())


def job_view(rec: JobRecord) -> JobView:
    return JobView.model_validate({**rec.model_dump(), "links": links_for(rec.job_id)})
