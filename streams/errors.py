"""Typed errors, and the one place that maps Lua return codes to them."""

from __future__ import annotations

from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Redis cannot take a command now but will again: unreachable or loading (ConnectionError),
# slow (TimeoutError), failing over (READONLY from a demoted master, CLUSTERDOWN, TRYAGAIN, a
# slot without a master yet, a cluster client out of redirections: ClusterError, MOVED) or full
# (OOM under maxmemory-policy noeviction). Workers back off and retry; the gateway answers 503
# with Retry-After. Nothing else a Redis command raises is retried blindly.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError, TryAgainError,
    ClusterDownError, ClusterError, SlotNotCoveredError, MovedError, ConnectionError,
    TimeoutError, OSError,
)


class AiqError(Exception):
    """Base of every domain error. ``code`` is stable; the message is for people."""

    code = "aiq_error"
    # A batch's jobs that the error is about, by their place in the request (0-based).
    items: tuple[int, ...] = ()


class JobNotFound(AiqError):
    code = "job_not_found"


class IllegalTransition(AiqError):
    code = "illegal_transition"


class IdempotencyConflict(AiqError):
    code = "idempotency_conflict"


class NotOwner(AiqError):
    """A fenced write: the entry is no longer this worker's (reclaimed, or already finished)."""

    code = "not_owner"


class DeadLettered(AiqError):
    code = "dead_lettered"


class JobFailed(AiqError):
    """Raised by ``Producer.result`` for a job that failed; ``error`` is the job's error."""

    code = "job_failed"

    def __init__(self, message: str, error: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.error = error or {}


class ModelNotReady(IllegalTransition):
    """Inference asked for a model whose training job has not succeeded (yet)."""

    code = "model_not_ready"


class InvalidParameters(AiqError):
    """Inference parameters outside what the model type declares (found once the model is
    known): ``problems`` are (field path in the request, the rule broken)."""

    code = "validation_error"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {rule}" for field, rule in problems[:5]))
        self.problems = problems


class QueueFull(AiqError):
    """The worker type's stream holds MAX_QUEUED jobs not finished: submit again later."""

    code = "queue_full"


class NotReplicated(AiqError):
    """Durable submit: the master took the job, but fewer replicas than asked confirmed it in
    time. The job exists (and may run); submit again with the same Idempotency-Key."""

    code = "not_replicated"

    def __init__(self, message: str, job_id: str, acked: int, wanted: int) -> None:
        super().__init__(message)
        self.job_id, self.acked, self.wanted = job_id, acked, wanted


class JobCancelled(AiqError):
    code = "job_cancelled"


class StaleEntry(AiqError):
    """The entry belongs to a job that is final or was requeued under a newer entry."""

    code = "stale_entry"


# Lua return codes (negative = refused). Scripts return {code, detail, ...}.
OK = 0
NOT_OWNER = -1
STALE = -2
DEAD = -3
ILLEGAL = -4
NOT_FOUND = -5
IDEMPOTENCY_CONFLICT = -6
QUEUE_FULL = -7

_ERRORS: dict[int, type[AiqError]] = {
    NOT_OWNER: NotOwner,
    STALE: StaleEntry,
    DEAD: DeadLettered,
    ILLEGAL: IllegalTransition,
    NOT_FOUND: JobNotFound,
    IDEMPOTENCY_CONFLICT: IdempotencyConflict,
    QUEUE_FULL: QueueFull,
}


def error_for(code: int, detail: str, context: str) -> AiqError | None:
    """The typed error for a negative script code; None for codes >= 0."""
    if code >= 0:
        return None
    cls = _ERRORS.get(code, AiqError)
    return cls(f"{context}: {detail}" if detail else context)


def raise_for(code: int, detail: str, context: str) -> None:
    """Raise the typed error for a negative script code; return for codes >= 0."""
    err = error_for(code, detail, context)
    if err is not None:
        raise err
