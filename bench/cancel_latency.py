"""Cancel latency of every built-in model type: how long a running job takes to end after a
cancel, at costly (but allowed) parameters.

For each worker type whose environment is installed (diagnostic and sklearn always; pytorch-2.1
and tensorflow when ``aiq env install`` made them), one real worker process runs against a
private Redis. Each model type gets ``--repeat`` jobs; each is cancelled at a random moment
after its first ``training`` progress event, and the time from the cancel request to the
``cancelled`` record is measured. The ratio printed is the worst case over the 1 s a user would
call "at once" (a reference measured in the same run: the noop round trip is printed beside it).

    uv run --extra sklearn python -m bench.cancel_latency --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aiq.envs import env_python
from bench._redis import client, private_redis
from schemas.catalogue import CATALOGUE
from schemas.requests import TrainingRequest
from schemas.status import JobStatus
from streams.errors import IllegalTransition
from streams.producer import Producer

BIG_ROWS, BIG_FEATURES = 40_000, 40
# Model type -> (data path, hyperparameters): a job that runs for minutes.
JOBS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "sleep": (None, {"seconds": 86_400, "steps": 1}),
    "gpu_sim": (None, {"seconds": 86_400, "steps": 1}),
    "random_forest": ("big.csv", {"n_estimators": 5_000}),
    "svm": ("big.csv", {"C": 1e6}),
    "logistic_regression": ("big.csv", {"max_iter": 100_000, "C": 1e6}),
    # the costliest CPU step allowed (MAX_CPU_STEP in consumers/frameworks/pytorch)
    **{m: ("builtin:digits", {"epochs": 10_000, "batch_size": 32, "image_size": 64,
                              "width": 64}) for m in ("resnet", "vgg", "alexnet")},
    **{m: ("builtin:sentiment", {"epochs": 10_000, "batch_size": 11, "max_length": 256,
                                 "hidden_size": 256, "num_layers": 4})
       for m in ("bert", "transformer", "gpt")},
    # the largest step allowed (MAX_STEP_PIXELS in consumers/frameworks/tensorflow/train.py)
    **{m: ("builtin:digits", {"epochs": 10_000, "batch_size": 2**19 // side**2})
       for m, side in (("mobilenet", 32), ("inception", 75), ("efficientnet", 32))},
}
TYPES = ("diagnostic", "sklearn", "pytorch-2.1", "tensorflow")
RUNNING_STAGES = {"sleeping", "training", "validating"}


def _big_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BIG_ROWS, BIG_FEATURES))
    y = (x[:, 0] + rng.normal(scale=2.0, size=BIG_ROWS) > 0).astype(int)
    header = ",".join(f"f{i}" for i in range(BIG_FEATURES)) + ",label"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="",
               fmt=["%.5f"] * BIG_FEATURES + ["%d"])


def _python(worker_type: str) -> Path | None:
    extra = CATALOGUE[worker_type].extra
    if extra in (None, "sklearn"):
        return Path(sys.executable)
    python = env_python(Path(".venvs") / extra)
    return python if python.exists() else None


def _spawn(worker_type: str, python: Path, url: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "WORKER_TYPE": worker_type,
           "MODEL_FRAMEWORK": CATALOGUE[worker_type].framework, "MAX_CONCURRENT_JOBS": "1",
           "DATA_ROOT": str(tmp / "data"), "ARTIFACT_ROOT": str(tmp / "artifacts"),
           "LOG_LEVEL": "WARNING", "PROGRESS_INTERVAL_S": "0.1"}
    log = (tmp / f"{worker_type}.log").open("ab")
    return subprocess.Popen([str(python), "-m", "consumers"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


async def _running(producer: Producer, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = await producer.get(job_id)
        if rec.status.terminal:
            raise RuntimeError(f"{job_id} ended before the cancel: {rec.error}")
        if rec.progress and rec.progress.get("stage") in RUNNING_STAGES:
            return
        if rec.status is JobStatus.RUNNING and rec.model_type in ("sleep", "gpu_sim"):
            return  # one step of a day: its first report would come at the end
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{job_id} did not start training within {timeout} s")


async def _cancel_once(producer: Producer, model_type: str) -> float | None:
    data_path, hp = JOBS[model_type]
    sub = await producer.submit_training(TrainingRequest(
        model_type=model_type, data_path=data_path, hyperparameters=hp))
    await _running(producer, sub.job_id, timeout=600)
    await asyncio.sleep(random.uniform(0.5, 2.0))  # a random moment inside a step
    before = (await producer.get(sub.job_id)).progress or {}
    asked = time.monotonic()
    try:
        await producer.cancel(sub.job_id)
    except IllegalTransition:
        return None  # it finished first: nothing to measure
    rec = await producer.wait(sub.job_id, timeout=600)
    took = time.monotonic() - asked
    if rec.status is not JobStatus.CANCELLED:
        raise RuntimeError(f"{model_type}: ended {rec.status.value}, not cancelled: {rec.error}")
    if took > 3:
        print(f"  {model_type}: {took:.2f} s; at the cancel its last report was "
              f"{before.get('stage')} epoch {before.get('epoch')} step {before.get('step')}",
              flush=True)
    return took


async def run(repeat: int, types: tuple[str, ...], models: frozenset[str] | None = None
              ) -> dict[str, Any]:
    random.seed(1)
    out: dict[str, Any] = {"types": {}, "skipped": []}
    with private_redis() as server, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "data").mkdir()
        _big_csv(tmp / "data" / "big.csv")
        redis = client(server.url)
        producer = Producer(redis)
        for worker_type in types:
            python = _python(worker_type)
            if python is None:
                out["skipped"].append(f"{worker_type}: no environment (aiq env install)")
                continue
            proc = _spawn(worker_type, python, server.url, tmp)
            try:
                for model_type in sorted(CATALOGUE[worker_type].model_types & set(JOBS)
                                         & (models or set(JOBS))):
                    tries = [await _cancel_once(producer, model_type) for _ in range(repeat)]
                    took = [t for t in tries if t is not None]
                    if not took:
                        out["skipped"].append(f"{model_type}: finished before every cancel")
                        continue
                    out["types"][model_type] = {"worker_type": worker_type,
                                                "max_s": round(max(took), 3),
                                                "all_s": [round(t, 3) for t in took]}
                    print(f"{model_type:20s} {worker_type:12s} cancel → cancelled: "
                          f"max {max(took):.2f} s  ({', '.join(f'{t:.2f}' for t in took)})",
                          flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        await redis.aclose()
    worst = max((v["max_s"] for v in out["types"].values()), default=float("nan"))
    out["worst_s"] = worst
    out["worst_over_1s"] = round(worst / 1.0, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--models", default="", help="only these model types (comma-separated)")
    args = parser.parse_args(argv)
    models = frozenset(m for m in args.models.split(",") if m) or None
    result = asyncio.run(run(args.repeat, tuple(args.types.split(",")), models))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
