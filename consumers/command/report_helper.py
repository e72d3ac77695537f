"""``aiq.report``: progress and metrics from a command job's own program.

    import aiq
    for step in range(steps):
        ...
        aiq.report(step=step + 1, steps=steps, loss=loss, accuracy=acc)

Each call writes one line of JSON to the pipe whose file descriptor the worker names in
``AIQ_REPORT_FD`` (3); the worker turns it into the job's ``progress`` event (coalesced to at
most one per ``PROGRESS_INTERVAL_S``) and keeps the last value of every metric for the job's
result. Outside a command job (no ``AIQ_REPORT_FD``) it does nothing and returns False.

Standard library only, and self-contained: ``aiq.report`` is this function, and the worker
copies this very file as the package ``aiq`` into a directory first on the job's PYTHONPATH
(``COMMAND_ENV_ROOT/.aiq-python``), so ``import aiq`` works in any job environment, with no aiq
installed there. Any other language writes the same lines itself, e.g.
``echo '{"step": 3, "loss": 0.25}' >&3``.

Fields the progress event knows: ``step``, ``steps``, ``epoch``, ``epochs`` (integers),
``percent`` (0-100), ``loss`` (a number), ``stage`` and ``message`` (text); every other keyword
is a metric (a number), like those in ``metrics``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

__all__ = ["report"]

_LOCK = threading.Lock()
REPORT_FD_ENV = "AIQ_REPORT_FD"


def report(step: int | None = None, loss: float | None = None, *, steps: int | None = None,
           epoch: int | None = None, epochs: int | None = None, percent: float | None = None,
           stage: str | None = None, message: str | None = None,
           metrics: dict[str, float] | None = None, **more: float) -> bool:
    """Report progress and metrics to the worker running this job; False when not in one."""
    raw = os.environ.get(REPORT_FD_ENV, "")
    if not raw.isdigit():
        return False
    fields: dict[str, Any] = {"step": step, "loss": loss, "steps": steps, "epoch": epoch,
                              "epochs": epochs, "percent": percent, "stage": stage,
                              "message": message}
    payload = {name: value for name, value in fields.items() if value is not None}
    if metrics or more:
        payload["metrics"] = {**(metrics or {}), **more}
    line = (json.dumps(payload, default=float) + "\n").encode()
    with _LOCK:  # one line at a time, whatever the threads
        view = memoryview(line)
        while view:
            view = view[os.write(int(raw), view):]
    return True
