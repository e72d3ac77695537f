"""How a job's run ends, as the Lua transition that records it: one type per script, named as
its ``.lua`` file is. ``QueueConsumer.write_endings`` writes a list of them in one round trip.

| type            | script               | the job then                                      |
|-----------------|----------------------|---------------------------------------------------|
| `Complete`      | `complete.lua`       | `succeeded`, its result kept                       |
| `Fail`          | `fail.lua`           | `failed`, its error kept                           |
| `ConfirmCancel` | `confirm_cancel.lua` | `cancelled` (the cancel a client asked for landed) |
| `Retry`         | `retry.lua`          | `retrying`, due again after ``delay_ms``           |
| `Handback`      | `handback.lua`       | `queued` again, not counted as an attempt          |

A `Retry` past the job's own ``max_retries`` (record field) is refused by ``retry.lua``: the job
is `failed` instead (the retry's error, not retryable), so no worker can exceed that budget.

Lease renewal (``renew.lua``) answers a `RenewCode` per entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Self

import orjson

from streams.delivery import Delivery

__all__ = ["Complete", "ConfirmCancel", "Ending", "Fail", "Handback", "RenewCode", "Retry"]


def _json(value: Any) -> str:
    """Raises ``TypeError`` (orjson's JSONEncodeError) for a value JSON cannot hold."""
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class _Batched:
    """An ending written for many jobs of one stream in one script call."""

    delivery: Delivery
    payload: str  # JSON: the result (Complete) or the error (Fail)

    @classmethod
    def of(cls, d: Delivery, value: dict[str, Any]) -> Self:
        """Raises ``TypeError`` for a value JSON cannot hold."""
        return cls(d, _json(value))


@dataclass(frozen=True, slots=True)
class Complete(_Batched):
    script: ClassVar[str] = "complete"


@dataclass(frozen=True, slots=True)
class Fail(_Batched):
    script: ClassVar[str] = "fail"


@dataclass(frozen=True, slots=True)
class ConfirmCancel:
    script: ClassVar[str] = "confirm_cancel"
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Retry:
    script: ClassVar[str] = "retry"
    delivery: Delivery
    error: str  # JSON
    delay_ms: int
    overrides: str = ""  # what the next attempt changes (JSON), e.g. a halved batch size

    @classmethod
    def of(cls, d: Delivery, error: dict[str, Any], delay_ms: int,
           overrides: dict[str, Any] | None = None) -> Retry:
        return cls(d, _json(error), delay_ms, _json(overrides) if overrides else "")


@dataclass(frozen=True, slots=True)
class Handback:
    script: ClassVar[str] = "handback"
    delivery: Delivery
    reason: str


Ending = Complete | Fail | ConfirmCancel | Retry | Handback


class RenewCode(IntEnum):
    """What ``renew.lua`` answers for each entry."""

    RENEWED = 0
    LOST = 1  # not this consumer's any more (reclaimed, acked, or gone): stop, drop the result
    CANCEL_REQUESTED = 2  # renewed, and a client asked to cancel the job
