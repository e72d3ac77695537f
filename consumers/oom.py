"""CUDA out of memory → the same job again with its batch size halved, a bounded number of times.

A training job that fails with ``cuda_oom`` (``CudaOutOfMemory``) is not retried as it was: the
retry carries ``overrides`` (entry and record field, JSON) that the next attempt applies on top of
the submitted hyperparameters, and the history of what ran out of memory::

    {"hyperparameters": {"batch_size": 16},
     "oom_retries": [{"batch_size": 64, "attempt": 1}, {"batch_size": 32, "attempt": 2}]}

It stops at batch size 1 or after ``max_halvings`` halvings, and the job then fails with the OOM
error (not retryable, the halvings listed). A job that succeeds after halvings records them in
its result: ``oom_retries`` and the ``batch_size`` it ran with.
"""

from __future__ import annotations

from typing import Any

from consumers.frameworks.base import CudaOutOfMemory
from schemas.records import JobMessage
from schemas.status import JobKind

CUDA_OOM = CudaOutOfMemory.code
DEFAULT_BATCH_SIZE = 32  # the request schema's default (schemas.requests.Hyperparameters)


def batch_size_of(message: JobMessage) -> int:
    """The batch size a message runs with (its overrides applied by the caller)."""
    options = message.hyperparameters if message.kind is JobKind.TRAINING else message.parameters
    value = options.get("batch_size", DEFAULT_BATCH_SIZE)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else DEFAULT_BATCH_SIZE


def applies(message: JobMessage | None, error: dict[str, Any]) -> bool:
    """Whether a failure is handled here: a training job that ran out of GPU memory."""
    return (message is not None and message.kind is JobKind.TRAINING
            and error.get("code") == CUDA_OOM)


def _history(message: JobMessage) -> list[dict[str, Any]]:
    history = message.overrides.get("oom_retries")
    return list(history) if isinstance(history, list) else []


def next_overrides(message: JobMessage, max_halvings: int) -> dict[str, Any] | None:
    """The overrides of the next attempt after an OOM of ``message`` (as delivered: its own
    overrides not yet applied), or None when the bound is reached."""
    batch = batch_size_of(message.with_overrides())
    history = _history(message)
    if batch <= 1 or len(history) >= max_halvings:
        return None
    changed = {**message.overrides.get("hyperparameters", {}), "batch_size": max(batch // 2, 1)}
    return {**message.overrides, "hyperparameters": changed,
            "oom_retries": [*history, {"batch_size": batch, "attempt": message.attempt}]}


def final_error(message: JobMessage, error: dict[str, Any]) -> dict[str, Any]:
    """The error of a job that ran out of memory once more than it may be retried for."""
    batch = batch_size_of(message.with_overrides())
    tried = [*(int(h.get("batch_size", 0)) for h in _history(message)), batch]
    why = "batch_size 1" if batch <= 1 else f"{len(tried) - 1} halvings"
    return {**error, "retryable": False,
            "message": f"{error.get('message', 'CUDA out of memory')} (gave up at {why}; "
                       f"batch sizes tried: {' → '.join(map(str, tried))})",
            "oom_retries": [*_history(message), {"batch_size": batch,
                                                  "attempt": message.attempt}]}


def annotate(message: JobMessage, result: dict[str, Any]) -> None:
    """Record in a successful result what OOM retries it took."""
    history = _history(message)
    if history:
        result["oom_retries"] = history
        result["batch_size"] = batch_size_of(message.with_overrides())
