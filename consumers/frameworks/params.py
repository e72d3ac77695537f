"""The one reader of a job's hyperparameters (and inference parameters): each value is read
with its default and its documented bounds, and a bad one fails the job at once
(``FailJob``, code ``invalid_hyperparameters``) with a message naming the parameter, the rule
and the value given. Every framework reads its parameters through ``Params``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from consumers.errors import FailJob

INVALID = "invalid_hyperparameters"


def bad(name: str, rule: str, value: Any) -> FailJob:
    return FailJob(f"hyperparameter {name!r} must be {rule}, got {value!r}", code=INVALID)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


class Params:
    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values

    def integer(self, name: str, default: int, lo: int, hi: int | None = None) -> int:
        """An integer in ``[lo, hi]`` (a float with no fraction counts)."""
        value = self.values.get(name, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo \
                or (hi is not None and value > hi):
            raise bad(name, f"an integer >= {lo}" if hi is None
                      else f"an integer between {lo} and {hi}", value)
        return value

    def integer_or_none(self, name: str, default: int | None, lo: int, hi: int | None = None
                        ) -> int | None:
        """``integer``, or null (None) for 'no limit'."""
        value = self.values.get(name, default)
        if value is None:
            return None
        try:
            return Params({name: value}).integer(name, 0, lo, hi)
        except FailJob:
            raise bad(name, (f"an integer >= {lo}" if hi is None else
                             f"an integer between {lo} and {hi}") + " or null", value) from None

    def number(self, name: str, default: float, *, gt: float | None = None,
               ge: float | None = None, lt: float | None = None, le: float | None = None
               ) -> float:
        """A finite number within the bounds given (``gt`` > , ``ge`` >=, ``lt`` <, ``le`` <=)."""
        value = self.values.get(name, default)
        ok = _is_number(value) and (gt is None or value > gt) and (ge is None or value >= ge) \
            and (lt is None or value < lt) and (le is None or value <= le)
        if not ok:
            bounds = [f"{op} {b}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le))
                      if b is not None and math.isfinite(b)]
            raise bad(name, "a number" + (" " + " and ".join(bounds) if bounds else ""), value)
        return float(value)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.values.get(name, default)
        if value not in choices:
            raise bad(name, "one of " + ", ".join(choices), value)
        return str(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.values.get(name, default)
        if not isinstance(value, bool):
            raise bad(name, "true or false", value)
        return value

    def text(self, name: str) -> str | None:
        """A non-empty string, or None when not given."""
        value = self.values.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise bad(name, "a non-empty string", value)
        return value
