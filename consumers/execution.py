"""Running a job's framework code (in an executor thread) and turning how it ended into an
outcome: succeeded, failed (retryable or not), cancelled, interrupted or lost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from consumers import oom
from consumers.frameworks.base import (
    CancelRequested,
    FailJob,
    Framework,
    JobContext,
    Progress,
    RetryLater,
    StopRequested,
    TimedOut,
)
from consumers.progress import JobRun
from schemas.status import JobKind

_INFERENCE = JobKind.INFERENCE  # enum member lookup is slow on a hot path (Python 3.11)
Kind = Literal["succeeded", "failed", "cancelled", "interrupted", "lost"]

# Errors worth another attempt: the job may pass next time. Anything else is a bug or bad input
# and fails at once instead of N times.
TRANSIENT = (RetryLater, ConnectionError, TimeoutError, MemoryError, OSError)


@dataclass(slots=True)
class Outcome:
    kind: Kind
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] = field(default_factory=dict)
    run_s: float = 0.0  # how long the job's code ran (0: refused before it ran)

    @property
    def retryable(self) -> bool:
        return bool(self.error.get("retryable"))

    @classmethod
    def success(cls, result: dict[str, Any]) -> Outcome:
        return cls("succeeded", result=result)

    @classmethod
    def failure(cls, code: str, message: str, retryable: bool = False) -> Outcome:
        return cls("failed", error={"code": code, "message": message, "retryable": retryable})

    def log_fields(self) -> dict[str, Any]:
        return {"error": self.error} if self.error else {}


def run_framework(framework: Framework, ctx: JobContext, progress: Progress) -> dict[str, Any]:
    """Executor-thread entry point."""
    if not isinstance(progress, JobRun):
        return _run(framework, ctx, progress)
    return _begun(progress, _run, framework, ctx, progress)


def run_command(commands: Callable[[JobContext, JobRun], dict[str, Any]], ctx: JobContext,
                run: JobRun) -> dict[str, Any]:
    """Executor-thread entry point of a command job (consumers/command/runner.py)."""
    return _begun(run, commands, ctx, run)


def _begun(run: JobRun, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    run.begin()  # the timeout starts now; a job taken back meanwhile stops here
    try:
        run.check()  # cancelled or interrupted while waiting for the thread
        return fn(*args)
    finally:
        run.end()


def _run(framework: Framework, ctx: JobContext, progress: Progress) -> dict[str, Any]:
    if ctx.message.kind is _INFERENCE:
        return framework.infer(ctx, progress)
    return framework.train(ctx, progress)


def classify(exc: BaseException, run: JobRun) -> Outcome:
    if isinstance(exc, TimedOut):
        return Outcome.failure(TimedOut.code, str(exc))
    if isinstance(exc, CancelRequested):
        return Outcome("cancelled")
    if isinstance(exc, StopRequested):
        return Outcome("lost" if run.lost else "interrupted")
    if isinstance(exc, FailJob):
        return _detailed(Outcome.failure(exc.code, str(exc)), exc)
    if isinstance(exc, FileNotFoundError):
        return Outcome.failure("file_not_found", str(exc))
    if isinstance(exc, TRANSIENT):
        code = getattr(exc, "code", type(exc).__name__)
        return _detailed(Outcome.failure(code, str(exc) or type(exc).__name__, retryable=True),
                         exc)
    if isinstance(exc, Exception):
        return Outcome.failure("job_error", f"{type(exc).__name__}: {exc}")
    raise exc  # KeyboardInterrupt, SystemExit, CancelledError


def _detailed(outcome: Outcome, exc: BaseException) -> Outcome:
    """The error with the exception's ``details`` (a command job's exit code, stderr tail)."""
    details = getattr(exc, "details", None)
    if isinstance(details, dict):
        outcome.error.update({k: v for k, v in details.items() if k not in outcome.error})
    return outcome


def succeeded(run: JobRun, result: Any, provenance: dict[str, Any]) -> Outcome:
    """The job's code returned ``result``: a success once it is a dict, with ``provenance``
    (framework, its version, duration, worker) added where the framework left it out."""
    if not isinstance(result, dict):
        return Outcome.failure("job_error", f"framework returned {type(result).__name__}, "
                               "not a result dict")
    for name, value in provenance.items():
        result.setdefault(name, value)
    if run.delivery.message is not None:
        oom.annotate(run.delivery.message, result)  # the batch size a CUDA OOM left it with
    return Outcome.success(result)
