"""From how a job's run ended (an ``Outcome``) to the transition that records it
(``streams.endings``): the worker's one table of endings.

| outcome       | ending                                                              |
|---------------|---------------------------------------------------------------------|
| `succeeded`   | `Complete` with the result                                           |
| `cancelled`   | `ConfirmCancel`                                                      |
| `interrupted` | `Handback` (the worker is shutting down: another worker runs it)     |
| `lost`        | nothing: another worker owns the job now, this run's result is dropped |
| `failed`      | CUDA OOM with batch size left to halve: `Retry` with it halved;       |
|               | retryable with attempts left: `Retry` after a backoff; else `Fail`     |

Attempts left: a job is retried at most min(its own ``max_retries``, the worker's MAX_RETRIES)
times (MAX_RETRIES alone when it set none); its own ``max_retries`` bounds CUDA OOM halvings
too, and retry.lua enforces it again (a retry past it fails the job).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from consumers import oom
from consumers.execution import Kind, Outcome
from consumers.settings import WorkerSettings
from streams.delivery import Delivery
from streams.endings import Complete, ConfirmCancel, Ending, Fail, Handback, Retry

SHUTDOWN = "worker shutdown"


def ending_for(d: Delivery, outcome: Outcome, settings: WorkerSettings) -> Ending | None:
    """Raises ``TypeError`` for a result JSON cannot hold."""
    return _BY_OUTCOME[outcome.kind](d, outcome, settings)


def _failed(d: Delivery, outcome: Outcome, settings: WorkerSettings) -> Ending:
    if oom.applies(d.message, outcome.error):
        return _oom(d, outcome, settings)
    if outcome.retryable and d.attempt < retry_budget(d, settings) + 1:
        return Retry.of(d, outcome.error, backoff_ms(settings, d.attempt))
    if outcome.retryable:
        outcome.error["message"] += f" (gave up after {d.attempt} attempts)"
    return Fail.of(d, outcome.error)


def _oom(d: Delivery, outcome: Outcome, settings: WorkerSettings) -> Ending:
    """CUDA OOM: again with batch_size halved, within its own bound (consumers/oom.py)."""
    assert d.message is not None
    overrides = oom.next_overrides(d.message, settings.oom_max_halvings)
    own = d.message.max_retries
    if overrides is None or (own is not None and d.attempt >= own + 1):
        return Fail.of(d, oom.final_error(d.message, outcome.error))
    return Retry.of(d, outcome.error, backoff_ms(settings, 1), overrides)


def retry_budget(d: Delivery, settings: WorkerSettings) -> int:
    """How many times the job may be retried: its own ``max_retries`` within the worker's."""
    own = d.message.max_retries if d.message is not None else None
    return settings.max_retries if own is None else min(own, settings.max_retries)


def backoff_ms(settings: WorkerSettings, attempt: int) -> int:
    """Delay before retry ``attempt`` + 1: doubling from ``retry_backoff_s``, capped, jittered."""
    base = settings.retry_backoff_s * 2 ** (attempt - 1)
    capped = min(base, settings.retry_backoff_max_s)
    return int(capped * 1000 * random.uniform(0.8, 1.0))


_BY_OUTCOME: dict[Kind, Callable[[Delivery, Outcome, WorkerSettings], Ending | None]] = {
    "succeeded": lambda d, o, _: Complete.of(d, o.result),
    "cancelled": lambda d, _o, _s: ConfirmCancel(d),
    "interrupted": lambda d, _o, _s: Handback(d, SHUTDOWN),
    "lost": lambda _d, _o, _s: None,
    "failed": _failed,
}
