"""A framework without ML cost, so tests and benchmarks exercise the queue itself.

Model types: ``noop`` (returns at once), ``sleep`` (``seconds`` in ``steps`` steps, reporting
progress each step, so it can be cancelled, interrupted and lease-renewed), ``fail``
(``error``: fatal | retryable; ``fail_times``: fail the first N attempts, then succeed),
``gpu_sim`` (a GPU job without a GPU, for admission and OOM tests: reports a memory peak of
``base_mb + mb_per_sample * batch_size`` MiB as ``gpu_peak_mb``, raises CUDA OOM when
``batch_size`` > ``oom_above``, and runs ``seconds`` in ``steps`` like ``sleep``).
"""

from __future__ import annotations

import time
from typing import Any

from consumers.frameworks.base import (
    CudaOutOfMemory,
    FailJob,
    JobContext,
    Progress,
    RetryLater,
)
from consumers.frameworks.params import Params
from schemas import aiq_version


class DiagnosticFramework:
    name = "diagnostic"

    def version(self) -> str:
        return aiq_version()

    def train(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        params = msg.hyperparameters
        if msg.model_type == "sleep":
            return self._sleep(params, progress)
        if msg.model_type == "fail":
            return self._fail(params, ctx.attempt)
        if msg.model_type == "gpu_sim":
            return self._gpu_sim(params, ctx, progress)
        return {"ok": True}

    def infer(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        rows = ctx.message.inputs or []
        return {"predictions": [len(row) for row in rows], "n": len(rows)}

    def _sleep(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        seconds = Params(params).number("seconds", 1.0, ge=0)
        steps = max(int(Params(params).number("steps", 10, ge=0)), 1)
        epochs = int(params.get("epochs", 1))
        started = time.monotonic()
        for epoch in range(1, epochs + 1):
            for step in range(1, steps + 1):
                time.sleep(seconds / steps / epochs)
                done = ((epoch - 1) * steps + step) / (steps * epochs)
                progress("sleeping", epoch=epoch, epochs=epochs, step=step, steps=steps,
                         percent=100 * done, loss=1.0 - done)
        return {"slept_s": round(time.monotonic() - started, 3), "steps": steps * epochs}

    def _gpu_sim(self, params: dict[str, Any], ctx: JobContext, progress: Progress
                 ) -> dict[str, Any]:
        p = Params(params)
        batch = int(p.number("batch_size", 32, ge=0))
        peak = int(p.number("base_mb", 100, ge=0) + p.number("mb_per_sample", 10, ge=0) * batch)
        if "oom_above" in params and batch > p.number("oom_above", 0, ge=0):
            raise CudaOutOfMemory(f"CUDA out of memory with batch_size={batch} (simulated: "
                                  f"oom_above={params['oom_above']})")
        began = time.time()
        result = self._sleep(params, progress) if params.get("seconds") else {}
        return {**result, "batch_size": batch, "gpu_peak_mb": peak,
                "device": ctx.extra.get("device", "cpu"), "ran_from": began,
                "ran_until": time.time()}

    def _fail(self, params: dict[str, Any], attempt: int) -> dict[str, Any]:
        fail_times = int(Params(params).number("fail_times", 1_000_000, ge=0))
        if attempt > fail_times:
            return {"ok": True, "attempt": attempt}
        if params.get("error", "fatal") == "retryable":
            raise RetryLater(f"diagnostic retryable failure on attempt {attempt}")
        raise FailJob(f"diagnostic fatal failure on attempt {attempt}", code="diagnostic")
