"""What a job's code raises to tell the worker how to go on. Framework code raises these; the
worker (consumers/execution.py ``classify``) turns each into an outcome.

- ``FailJob``: fail now, without retry (bad input, bad data, an unknown model ...).
- ``RetryLater``: a transient error; the job is retried with exponential backoff.
  ``CudaOutOfMemory`` is one: retried with its batch size halved.
- ``CancelRequested`` and ``StopRequested`` are raised by ``progress`` at a step boundary:
  a client cancelled the job, or the worker stops (SIGTERM drain, or it lost the lease).
  ``TimedOut`` is a cancel the worker asks for itself: the job ran past its ``timeout_s``.

Client-side errors (``JobFailed``, ``JobCancelled``) are in streams/errors.py.
"""

from __future__ import annotations


class FailJob(Exception):
    """Fail the job without retry (bad input, bad data, unknown model...)."""

    code = "job_failed"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class RetryLater(Exception):
    """A transient error: the job is retried with exponential backoff."""

    code = "retryable_error"


class CudaOutOfMemory(RetryLater):
    """The job ran out of GPU memory. The worker retries it with ``batch_size`` halved (bounded
    by OOM_MAX_HALVINGS) rather than with the same input; see consumers/oom.py. Raise it without
    chaining the framework's exception: that traceback holds the job's tensors, which must be
    freed before the memory can be released."""

    code = "cuda_oom"


class CancelRequested(Exception):
    """Raised by ``progress`` after a cancel request; the job stops at this step boundary."""


class StopRequested(Exception):
    """Raised by ``progress`` when the worker drains on SIGTERM or lost the job's lease."""


class TimedOut(CancelRequested):
    """Raised by ``progress`` once the job ran past its ``timeout_s``. Framework code treats it
    as a cancel (stop now, nothing to resume); the worker fails the job with code ``timeout``."""

    code = "timeout"
