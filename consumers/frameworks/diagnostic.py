"""A framework without ML cost, so tests and benchmarks exercise the queue itself.

Model types: ``noop`` (returns at once), ``sleep`` (``seconds`` in ``steps`` steps, reporting
progress each step, so it can be cancelled, interrupted and lease-renewed), ``fail``
(``error``: fatal | retryable | unserializable (returns a result JSON cannot hold); ``fail_times``:
fail the first N attempts, then succeed),
``gpu_sim`` (a GPU job without a GPU, for admission and OOM tests: reports a memory peak of
``base_mb + mb_per_sample * batch_size`` MiB as ``gpu_peak_mb``, raises CUDA OOM when
``batch_size`` > ``oom_above``, and runs ``seconds`` in ``steps`` like ``sleep``),
``redis_io`` (a short job that waits on I/O as real jobs do: ``round_trips`` (default 1)
blocking PINGs on a sync redis-py client that each job thread opens once, from the worker's
``REDIS_URL``; for the short-job benchmark).

Bounds: ``seconds`` <= 1 day, ``steps`` <= 1,000,000, ``epochs`` <= 10,000; a step longer than
``SLICE_S`` is slept in slices, so cancel and timeout take effect within ``SLICE_S``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

from consumers.frameworks.base import (
    CudaOutOfMemory,
    FailJob,
    JobContext,
    Progress,
    RetryLater,
    check_of,
)
from consumers.frameworks.params import Params
from schemas import aiq_version

SLICE_S = 0.25
MAX_SECONDS = 24 * 3600.0
MAX_STEPS = 1_000_000
MAX_MB = 16 * 1024 * 1024
MAX_ROUND_TRIPS = 10_000
_PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")


class _ThreadClients(threading.local):
    """One sync client per job thread (``redis_io``), opened at the thread's first such job."""

    client: redis.Redis | None = None


class DiagnosticFramework:
    name = "diagnostic"

    def __init__(self) -> None:
        self._clients = _ThreadClients()

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
        if msg.model_type == "redis_io":
            return self._redis_io(params)
        return {"ok": True}

    def infer(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        rows = ctx.message.inputs or []
        return {"predictions": [len(row) for row in rows], "n": len(rows)}

    def _sleep(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        p = Params(params)
        seconds = p.number("seconds", 1.0, ge=0, le=MAX_SECONDS)
        steps = max(int(p.number("steps", 10, ge=0, le=MAX_STEPS)), 1)
        epochs = p.integer("epochs", 1, 1, 10_000)
        check = check_of(progress)
        started = time.monotonic()
        step_s = seconds / steps / epochs
        for epoch in range(1, epochs + 1):
            for step in range(1, steps + 1):
                until = time.monotonic() + step_s
                while (left := until - time.monotonic()) > 0:
                    time.sleep(min(left, SLICE_S))
                    if left > SLICE_S:
                        check()
                done = ((epoch - 1) * steps + step) / (steps * epochs)
                progress("sleeping", epoch=epoch, epochs=epochs, step=step, steps=steps,
                         percent=100 * done, loss=1.0 - done)
        return {"slept_s": round(time.monotonic() - started, 3), "steps": steps * epochs}

    def _gpu_sim(self, params: dict[str, Any], ctx: JobContext, progress: Progress
                 ) -> dict[str, Any]:
        p = Params(params)
        batch = p.integer("batch_size", 32, 1, 65_536)
        peak = int(p.number("base_mb", 100, ge=0, le=MAX_MB)
                   + p.number("mb_per_sample", 10, ge=0, le=MAX_MB) * batch)
        if "oom_above" in params and batch > p.number("oom_above", 0, ge=0, le=MAX_MB):
            raise CudaOutOfMemory(f"CUDA out of memory with batch_size={batch} (simulated: "
                                  f"oom_above={params['oom_above']})")
        began = time.time()
        result = self._sleep(params, progress) if params.get("seconds") else {}
        return {**result, "batch_size": batch, "gpu_peak_mb": peak,
                "device": ctx.extra.get("device", "cpu"), "ran_from": began,
                "ran_until": time.time()}

    def _redis_io(self, params: dict[str, Any]) -> dict[str, Any]:
        round_trips = Params(params).integer("round_trips", 1, 0, MAX_ROUND_TRIPS)
        client = self._clients.client
        if client is None:
            url = os.environ.get("REDIS_URL", "")
            if not url.startswith(_PLAIN_SCHEMES):
                raise FailJob("redis_io needs the worker's REDIS_URL to name one Redis "
                              "(redis://, rediss:// or unix://)", code="diagnostic")
            client = self._clients.client = redis.Redis.from_url(url)
        for _ in range(round_trips):
            client.ping()
        return {"ok": True, "round_trips": round_trips}

    def _fail(self, params: dict[str, Any], attempt: int) -> dict[str, Any]:
        fail_times = Params(params).integer("fail_times", 1_000_000, 0, 1_000_000)
        if attempt > fail_times:
            return {"ok": True, "attempt": attempt}
        if params.get("error") == "unserializable":
            return {"too_big": 2**64}  # beyond 64 bits: the stored JSON cannot hold it
        if params.get("error", "fatal") == "retryable":
            raise RetryLater(f"diagnostic retryable failure on attempt {attempt}")
        raise FailJob(f"diagnostic fatal failure on attempt {attempt}", code="diagnostic")
