"""Job lifecycle states. The state machine lives in streams/lua; this is its vocabulary."""

from enum import StrEnum


class JobKind(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"
    COMMAND = "command"  # a team's own entrypoint run as a child process (POST /jobs/command)


# The model_type of every command job (its entry and record are read like any other job's).
COMMAND_MODEL_TYPE = "command"


class Priority(StrEnum):
    """A job's lane: workers read the high lane first, with a share kept for the normal lane
    while both have work (PRIORITY_WEIGHT), so normal jobs are never starved."""

    NORMAL = "normal"
    HIGH = "high"


class JobStatus(StrEnum):
    QUEUED = "queued"  # entry in the stream, waiting for a worker
    RUNNING = "running"  # a worker owns the entry and runs the job
    RETRYING = "retrying"  # failed with a retryable error, waiting out its backoff
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)
