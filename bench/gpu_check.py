"""End-to-end GPU check: a real ``pytorch-2.1-gpu`` worker on a machine with an NVIDIA GPU.

    uv run python bench/gpu_check.py [--python .venvs/pytorch_2_1_gpu/bin/python]

It starts its own Redis (aiq.redis_server, free port, in memory) and one ``pytorch-2.1-gpu``
worker process (in the ``pytorch_2_1_gpu`` environment, see ``aiq env``), then checks:

1. **admission** — as many ResNet jobs as there are GPUs, plus one, each declaring
   ``gpu_mem_mb`` = 60 % of the largest device's usable memory, so no two fit on one device:
   the extra job waits (a ``waiting`` event, status queued) and starts only after another job
   ended, and all succeed;
2. **CUDA OOM → halved batch** — a wide ResNet on 256x256 digits with ``batch_size=1024``, far
   beyond any GPU: it is retried with the batch halved (``retrying`` events carry the override)
   until it fits, and its result records ``oom_retries`` and the ``batch_size`` it ran with;
3. **memory back to baseline** — after the jobs, the GPU memory in use (NVML, through the
   worker's heartbeat) returns to what it was before the worker started, plus the worker's CUDA
   context (``--context-allowance-mb``).

Prints what it saw; exits 0 when all hold, 1 when one does not, 2 when it cannot run here (no
GPU, no ``pytorch_2_1_gpu`` environment). Takes about a minute on an H100; gives up after
``--timeout`` seconds (default 280).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the checkout's packages come first
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from aiq.envs import env_dir, env_python
from aiq.redis_server import RedisServer
from schemas.events import EventType, JobEvent, parse_event
from schemas.records import JobRecord
from schemas.requests import TrainingRequest
from schemas.status import JobStatus
from schemas.workers import GpuInfo
from streams import registry
from streams.connection import client
from streams.keys import QueueKeys
from streams.producer import Producer

WORKER_TYPE = "pytorch-2.1-gpu"
EXTRA = "pytorch_2_1_gpu"
KEYS = QueueKeys(WORKER_TYPE)
HEADROOM_MB = 256
# What a ``python`` of the GPU environment prints about the GPUs (through aiq's NVML boundary).
_PROBE = """
import json, sys
from consumers.gpu import GpuUnavailable, NvmlDevices
try:
    devices = NvmlDevices().devices()
except GpuUnavailable as exc:
    print(f"no NVIDIA GPU: {exc}", file=sys.stderr)
    sys.exit(3)
print(json.dumps([{"index": d.index, "name": d.name, "total_mb": d.total_mb,
                   "free_mb": d.free_mb} for d in devices]))
"""


class CannotRun(Exception):
    """This machine cannot run the check (exit 2)."""


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)

    def check(self, ok: bool, what: str) -> None:
        self.say(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures.append(what)


# ---- the machine -----------------------------------------------------------------------------

def gpu_python(choice: str | None) -> Path:
    python = Path(choice) if choice else env_python(env_dir(EXTRA))
    if not python.exists():
        raise CannotRun(f"no {EXTRA} environment ({python} is missing); make it with: "
                        f"aiq env install {WORKER_TYPE}  (or UV_PROJECT_ENVIRONMENT="
                        f".venvs/{EXTRA} uv sync --extra {EXTRA})")
    return python


def probe_gpus(python: Path) -> list[GpuInfo]:
    try:
        done = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True,
                              timeout=60, check=False, cwd=Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CannotRun(f"cannot run {python}: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CannotRun(f"{last} (probed with {python})")
    return [GpuInfo(**d) for d in json.loads(done.stdout)]


class Worker:
    """One ``python -m consumers`` process of the GPU type."""

    def __init__(self, python: Path, url: str, work: Path, slots: int) -> None:
        self.log_path = work / "worker.log"
        (work / "data").mkdir(exist_ok=True)
        env = {
            **os.environ, "WORKER_TYPE": WORKER_TYPE, "MODEL_FRAMEWORK": "pytorch",
            "USE_GPU": "true", "REDIS_URL": url, "MAX_CONCURRENT_JOBS": str(slots),
            "DATA_ROOT": str(work / "data"), "ARTIFACT_ROOT": str(work / "artifacts"),
            "GPU_HEADROOM_MB": str(HEADROOM_MB), "ADMISSION_RECHECK_S": "0.2",
            "HEARTBEAT_INTERVAL_S": "0.5", "OOM_MAX_HALVINGS": "8", "RETRY_BACKOFF_S": "0.2",
            "RECLAIM_INTERVAL_S": "0.5",  # also how often due retries are promoted
            "LOG_JSON": "true", "SHUTDOWN_GRACE_S": "10",
        }
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen([str(python), "-m", "consumers"], env=env,
                                        cwd=Path(__file__).resolve().parent.parent,
                                        stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited ({self.process.returncode}):\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


async def poll(check: Any, timeout: float, what: str, worker: Worker,
               interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        worker.check_alive()
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def gpus_now(redis: Redis) -> list[GpuInfo] | None:
    """The GPU inventory of the worker's latest heartbeat (NVML, read by the worker)."""
    workers = [w for w in await registry.list_workers(redis) if w.worker_type == WORKER_TYPE]
    return workers[0].gpus if workers else None


def used_mb(gpus: list[GpuInfo]) -> dict[int, int]:
    return {g.index: g.total_mb - g.free_mb for g in gpus}


async def events_of(redis: Redis, job_id: str) -> list[JobEvent]:
    return [parse_event(i, f) for i, f in await redis.xrange(KEYS.job_events(job_id))]


def resnet(gpu_mem_mb: int | None = None, **hp: Any) -> TrainingRequest:
    return TrainingRequest(model_type="resnet", data_path="builtin:digits",
                           hyperparameters=hp, requires_gpu=True,  # type: ignore[arg-type]
                           framework_override=WORKER_TYPE, gpu_mem_mb=gpu_mem_mb)


# ---- the checks ------------------------------------------------------------------------------

async def check_admission(redis: Redis, producer: Producer, gpus: list[GpuInfo],
                          worker: Worker, report: Report) -> None:
    usable = max(g.free_mb for g in gpus) - HEADROOM_MB
    size = int(usable * 0.6)
    n = len(gpus) + 1
    report.say(f"\n1. admission: {n} ResNet jobs of gpu_mem_mb={size} MiB each (60 % of the "
               f"largest device's {usable} usable MiB) on {len(gpus)} GPU(s)")
    subs = [await producer.submit_training(resnet(epochs=2, width=16, gpu_mem_mb=size))
            for _ in range(n)]
    recs: list[JobRecord] = []
    for sub in subs:
        recs.append(await producer.wait(sub.job_id, timeout=150))
        worker.check_alive()
    ends = []
    for rec in recs:
        if rec.started_at is not None and rec.result is not None:
            ends.append(rec.started_at + int(1000 * float(rec.result.get("duration_s", 0))))
    waited = 0
    for rec in recs:
        events = await events_of(redis, rec.job_id)
        waits = [e for e in events if e.type is EventType.WAITING]
        device = (rec.result or {}).get("gpu", {}).get("device")
        report.say(f"   {rec.job_id}: {rec.status.value} on {device}, waiting events "
                   f"{len(waits)}" + (f" ({getattr(waits[0], 'message', '')})" if waits else ""))
        if waits:
            waited += 1
            started = rec.started_at or 0
            report.check(any(end <= started + 100 for end in ends),
                         f"{rec.job_id} started only after another job's code ended")
    report.check(all(r.status is JobStatus.SUCCEEDED for r in recs), "every job succeeded")
    report.check(waited >= 1, "a job that did not fit waited (status queued, waiting event)")


async def check_oom(redis: Redis, producer: Producer, worker: Worker, report: Report) -> None:
    report.say("\n2. CUDA OOM: a wide ResNet (width 64, 2 blocks) on 256x256 digits, "
               "batch_size=1024")
    sub = await producer.submit_training(resnet(epochs=1, width=64, blocks=2, image_size=256,
                                                batch_size=1024))
    rec = await producer.wait(sub.job_id, timeout=200)
    worker.check_alive()
    retries = [e for e in await events_of(redis, sub.job_id) if e.type is EventType.RETRYING]
    sizes = [((getattr(e, "overrides", None) or {}).get("hyperparameters") or {})
             .get("batch_size") for e in retries]
    result = rec.result or {}
    report.say(f"   {rec.status.value} after {rec.attempt} attempt(s); retried with batch "
               f"sizes {sizes}; result oom_retries={result.get('oom_retries')} "
               f"batch_size={result.get('batch_size')} gpu_peak_mb={result.get('gpu_peak_mb')}")
    if rec.error is not None:
        report.say(f"   error: {rec.error.code}: {rec.error.message[:300]}")
    report.check(bool(retries) and all(getattr(e, "error", {}).get("code") == "cuda_oom"
                                       for e in retries), "the OOM was retried (cuda_oom)")
    halved = all(b == a // 2 for a, b in zip([1024, *sizes], sizes, strict=False))
    report.check(bool(sizes) and halved, "each retry halved the batch size")
    report.check(rec.status is JobStatus.SUCCEEDED and bool(result.get("oom_retries"))
                 and result.get("batch_size") == (sizes[-1] if sizes else None),
                 "it succeeded with a smaller batch, recorded in the result")
    peaks = await redis.hgetall(KEYS.gpu_peaks)
    report.say(f"   stored peaks (HGETALL {KEYS.gpu_peaks}): {peaks}")


async def check_memory(redis: Redis, before: dict[int, int], allowance: int, worker: Worker,
                       report: Report) -> None:
    report.say(f"\n3. memory after the jobs (NVML used; baseline before the worker started + "
               f"{allowance} MiB for its CUDA context)")

    async def back() -> dict[int, int] | None:
        gpus = await gpus_now(redis)
        if not gpus:
            return None
        now = used_mb(gpus)
        return now if all(now[i] <= before.get(i, 0) + allowance for i in now) else None

    try:
        now = await poll(back, 20, "GPU memory back to baseline", worker, interval=0.5)
    except TimeoutError:
        gpus = await gpus_now(redis) or []
        now = used_mb(gpus)
    for index, mb in sorted(now.items()):
        report.say(f"   cuda:{index}: used {mb} MiB (before the worker: {before.get(index, 0)} "
                   f"MiB)")
    report.check(all(now[i] <= before.get(i, 0) + allowance for i in now),
                 "GPU memory back to baseline after the jobs (torch cache emptied)")


async def run(url: str, python: Path, gpus: list[GpuInfo], work: Path, allowance: int,
              report: Report) -> None:
    before = used_mb(gpus)
    worker = Worker(python, url, work, slots=len(gpus) + 1)  # memory, not slots, decides
    redis = client(url)
    try:
        found = await poll(lambda: gpus_now(redis), 120, "the worker to register", worker)
        report.say(f"worker {WORKER_TYPE} up; GPUs: " + ", ".join(
            f"cuda:{g.index} {g.name} {g.free_mb}/{g.total_mb} MiB free" for g in found))
        producer = Producer(redis)
        await check_admission(redis, producer, found, worker, report)
        await check_oom(redis, producer, worker, report)
        await check_memory(redis, before, allowance, worker, report)
    finally:
        worker.stop()
        await redis.aclose()
        report.say(f"(worker log: {worker.log_path})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="End-to-end GPU check of a pytorch-2.1-gpu worker: admission, CUDA OOM "
                    "-> halved batch, memory back to baseline. Needs an NVIDIA GPU.")
    parser.add_argument("--python", help="python of the pytorch_2_1_gpu environment "
                        "(default: .venvs/pytorch_2_1_gpu/bin/python)")
    parser.add_argument("--timeout", type=float, default=280.0,
                        help="give up after this many seconds (default 280)")
    parser.add_argument("--context-allowance-mb", type=int, default=1536,
                        help="GPU memory the idle worker may keep: its CUDA context")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = Report()
    try:
        python = gpu_python(args.python)
        gpus = probe_gpus(python)
    except CannotRun as exc:
        print(f"gpu_check: cannot run here: {exc}", file=sys.stderr)
        return 2
    report.say("GPUs: " + ", ".join(f"cuda:{g.index} {g.name} ({g.total_mb} MiB, "
                                    f"{g.total_mb - g.free_mb} used)" for g in gpus))
    work = Path(tempfile.mkdtemp(prefix="aiq-gpu-check-"))
    try:
        with RedisServer(appendonly=False) as server:
            asyncio.run(asyncio.wait_for(
                run(server.url, python, gpus, work, args.context_allowance_mb, report),
                args.timeout))
    except TimeoutError as exc:
        why = str(exc) or f"not finished after --timeout {args.timeout:.0f} s"
        report.failures.append(why)
        print(f"gpu_check: {why}", file=sys.stderr)
    except RuntimeError as exc:  # the worker died, Redis would not start
        report.failures.append(str(exc))
        print(f"gpu_check: {exc}", file=sys.stderr)
    finally:
        if not args.keep and not report.failures:
            shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - started
    if report.failures:
        print(f"\nFAILED ({len(report.failures)}) in {took:.0f} s: "
              + "; ".join(f[:200] for f in report.failures) + f"\n(work directory: {work})")
        return 1
    print(f"\nall GPU checks passed in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
