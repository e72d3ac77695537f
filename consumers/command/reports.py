"""What a command job's program reports (``aiq.report``, one JSON object per line on fd 3),
turned into the job's progress (``JobRun``, which coalesces and publishes it). The last value of
every metric is kept for the job's result."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from consumers.frameworks.base import Progress

_INTEGERS = ("step", "steps", "epoch", "epochs")
_TEXTS = {"stage": 100, "message": 1000}
MAX_METRICS = 100
STAGE = "running"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class Reports:
    def __init__(self, progress: Progress, note: Callable[[str], None]) -> None:
        self.progress = progress
        self.note = note  # a line in the job's log (stream aiq)
        self.metrics: dict[str, float] = {}  # the last value of each, loss included
        self.last: dict[str, Any] = {}  # the last value of each field reported
        self.count = 0
        self._warned: set[str] = set()

    def __call__(self, line: str) -> None:
        """One report line; whatever is wrong with it is said once in the log, never fatal.
        ``progress`` may raise (a cancel learnt from its answer): that stops the job."""
        if not line.strip():
            return
        try:
            data = json.loads(line)
        except ValueError:
            self._warn("json", f"a report that is not JSON was ignored: {line[:200]!r}")
            return
        if not isinstance(data, dict):
            self._warn("object", "a report must be a JSON object; ignored")
            return
        fields, metrics = self._fields(data)
        self.count += 1
        self.metrics.update(metrics)
        if "loss" in fields:
            self.metrics["loss"] = fields["loss"]
        self.last.update(fields)
        stage = str(fields.pop("stage", STAGE))
        self.progress(stage, **fields, metrics=metrics or None)

    def _fields(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        fields: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        extra = data.pop("metrics", None)
        for key, value in [*data.items(), *(extra.items() if isinstance(extra, dict) else ())]:
            name = str(key)
            if name in _INTEGERS:
                number = _number(value)
                if number is not None and number >= 0 and number == int(number):
                    fields[name] = int(number)
                    continue
            elif name in _TEXTS and isinstance(value, str):
                fields[name] = value[:_TEXTS[name]]
                continue
            elif name in ("loss", "percent") and _number(value) is not None:
                fields[name] = _number(value)
                if name == "percent":
                    fields[name] = min(max(fields[name], 0.0), 100.0)
                continue
            elif _number(value) is not None and len(metrics) < MAX_METRICS and len(name) <= 100:
                metrics[name] = _number(value)  # type: ignore[assignment]
                continue
            self._warn(name, f"report field {name[:100]!r}: {str(value)[:100]!r} is not usable "
                       "(step, steps, epoch, epochs: integers; loss, percent and metrics: "
                       "numbers; stage, message: text); ignored")
        return fields, metrics

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned and len(self._warned) < 20:
            self._warned.add(key)
            self.note(message)
