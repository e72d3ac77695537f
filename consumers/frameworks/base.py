"""The one small interface every framework module implements.

Framework code runs in an executor thread, never on the event loop. It reports progress through
``progress`` and stops cooperatively: ``progress`` raises ``CancelRequested`` (or ``StopRequested``
on shutdown / lost lease) at the next call after a cancel, so call it at every step or epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from consumers.artifact_store import ArtifactStore
from consumers.errors import (
    CancelRequested,
    CudaOutOfMemory,
    FailJob,
    RetryLater,
    StopRequested,
    TimedOut,
)
from schemas.records import JobMessage

__all__ = ["CancelRequested", "CudaOutOfMemory", "FailJob", "Framework", "JobContext", "Progress",
           "RetryLater", "StopRequested", "TimedOut", "check_of"]


class Progress(Protocol):
    """Called from the job's thread. Cheap: the worker coalesces what it publishes."""

    def __call__(
        self,
        stage: str,
        *,
        percent: float | None = None,
        epoch: int | None = None,
        epochs: int | None = None,
        step: int | None = None,
        steps: int | None = None,
        loss: float | None = None,
        metrics: dict[str, float] | None = None,
        message: str = "",
    ) -> None: ...


def check_of(progress: Progress) -> Callable[[], None]:
    """``progress``'s stop check alone (raises like ``progress`` would, publishes nothing), for
    code that waits on something else between steps. A plain callable has none."""
    check = getattr(progress, "check", None)
    return check if callable(check) else (lambda: None)


@dataclass(frozen=True, slots=True)
class JobContext:
    """Where a job reads and writes: resolved data root, its artifact dir, its attempt.

    ``artifact_root`` is the worker's local directory (``ARTIFACT_ROOT``); ``store`` the
    artifact store it mirrors (``ARTIFACT_URI``; None: that directory itself)."""

    message: JobMessage
    data_root: Path
    artifact_root: Path
    deliveries: int = 1  # > 1: the job was reclaimed from a worker that died (resume)
    attempt: int = 1  # > 1: a retry after a retryable error
    extra: dict[str, Any] = field(default_factory=dict)
    store: ArtifactStore | None = None

    @property
    def artifacts(self) -> ArtifactStore:
        """Where models, metadata and checkpoints are saved and read (see artifact_store)."""
        return self.store if self.store is not None else ArtifactStore(self.artifact_root)

    @property
    def artifact_dir(self) -> Path:
        """The job's local directory, ``<ARTIFACT_ROOT>/<job_id>``."""
        return self.artifact_root / self.message.job_id

    @property
    def artifact_name(self) -> str:
        """Where the job's artifacts are, relative to ARTIFACT_ROOT: what a result may show
        (no server path in an answer)."""
        return self.message.job_id


class Framework(Protocol):
    """One per framework stack (sklearn, pytorch, tensorflow, diagnostic)."""

    name: str

    def version(self) -> str:
        """Exact version of the framework this process loaded."""
        ...

    def train(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        """Train ``ctx.message.model_type`` on ``ctx.message.data_path``; save the model under
        ``ctx.artifact_dir``; return the result (metrics, artifact paths, ...)."""
        ...

    def infer(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        """Load the model of ``ctx.message.model_id`` and predict on the message's inputs or
        data_path; return ``{"predictions": [...], ...}``."""
        ...
