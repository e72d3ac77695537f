"""PyTorch jobs through the whole queue: a real worker process of this environment's torch
worker type, real Redis, the Python API a client uses.

Every model type trains to better than chance on held-out data and then serves an inference job
by its ``model_id``; a worker SIGKILLed mid-training has its job resumed from the checkpoint by
another worker (also when the workers share nothing but Redis and an S3 artifact store); a
running job is cancelled between steps. Runs only in a torch environment
(``aiq env install pytorch-2.1``; the README's test command runs it there).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from redis.asyncio import Redis

from consumers.settings import WorkerSettings
from schemas.events import JobEvent, ProgressEvent
from schemas.requests import InferenceRequest, TrainingRequest
from schemas.status import JobStatus
from streams.connection import client
from streams.producer import Producer
from tests.s3_server import S3Server
from tests.support import results_within, settings_for, worker_process

# The worker type this environment serves (torch 2.0.x or 2.1.x).
WORKER_TYPE = "pytorch-2.0" if torch.__version__.startswith("2.0.") else "pytorch-2.1"
VISION = {"resnet": 3, "vgg": 3, "alexnet": 5}  # model type -> epochs
LANGUAGE = {"bert": 3, "transformer": 3, "gpt": 3}
# Training every model type takes about 45 s on a quiet 2-core machine, the kill and resume
# tests about 25 s each; sized for one three times slower.
TRAIN_S = 300
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(TRAIN_S + 60)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ptq")


def _settings(url: str, root: Path, **overrides: Any) -> WorkerSettings:
    # A lease of a few seconds: generous for a busy 2-core machine, short for the kill test.
    values: dict[str, Any] = {"lease_timeout_s": 4.0, "max_concurrent_jobs": 1, **overrides}
    return settings_for(url, root, WORKER_TYPE, **values)


@pytest.fixture(scope="module")
def serving(url: str, root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One worker process of this environment's type for the module's queue jobs."""
    with worker_process(_settings(url, root), root / "serving.log") as proc:
        yield proc


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def trained(producer: Producer, serving: subprocess.Popen[bytes]
                  ) -> dict[str, dict[str, Any]]:
    """Every model type trained once through the queue; model type -> job result."""
    jobs = {}
    for model_type, epochs in {**VISION, **LANGUAGE}.items():
        data = "builtin:digits" if model_type in VISION else "builtin:sentiment"
        sub = await producer.submit_training(TrainingRequest(
            model_type=model_type, data_path=data, hyperparameters={"epochs": epochs},
            framework_override=WORKER_TYPE))
        assert sub.worker_type == WORKER_TYPE
        jobs[model_type] = sub.job_id
    return await results_within(producer, jobs, TRAIN_S)


async def _infer(producer: Producer, model_id: str, inputs: list[Any],
                 **parameters: Any) -> dict[str, Any]:
    sub = await producer.submit_inference(InferenceRequest(
        model_id=model_id, inputs=inputs, parameters=parameters))
    assert sub.worker_type == WORKER_TYPE  # routed to the type that trained the model
    return await producer.result(sub.job_id, timeout=120)


def _provenance(result: dict[str, Any]) -> None:
    assert result["framework"] == "pytorch"
    assert result["framework_version"] == torch.__version__


@pytest.mark.parametrize("model_type", list(VISION))
async def test_vision_model_learns_digits_and_serves(trained: dict[str, dict[str, Any]],
                                                     producer: Producer,
                                                     model_type: str) -> None:
    from sklearn.datasets import load_digits

    result = trained[model_type]
    assert result["metrics"]["accuracy"] >= 0.8, result["history"]
    assert result["epochs_run"] == VISION[model_type]
    _provenance(result)
    digits = load_digits()
    out = await _infer(producer, result["model_id"], digits.data[:30].tolist())
    assert out["n"] == len(out["predictions"]) == 30
    hits = sum(int(p == t) for p, t in zip(out["predictions"], digits.target[:30], strict=True))
    assert hits >= 20, out["predictions"]
    _provenance(out)


@pytest.mark.parametrize("model_type", ["bert", "transformer"])
async def test_text_classifier_learns_sentiment_and_serves(
        trained: dict[str, dict[str, Any]], producer: Producer, model_type: str) -> None:
    result = trained[model_type]
    assert result["metrics"]["accuracy"] >= 0.75, result["history"]  # chance: 0.5
    _provenance(result)
    out = await _infer(producer, result["model_id"],
                       [["What a wonderful, moving film."], ["The service was awful."]])
    assert set(out["predictions"]) <= {"negative", "positive"} and out["n"] == 2


async def test_gpt_learns_and_generates(trained: dict[str, dict[str, Any]],
                                        producer: Producer) -> None:
    result = trained["gpt"]
    history = result["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert result["metrics"]["perplexity"] < 20
    out = await _infer(producer, result["model_id"], [["The movie was"]], max_new_tokens=6)
    assert out["generated"][0].strip() and out["predictions"][0].startswith("the movie was")


def _epoch(event: JobEvent, stage: str) -> int:
    """The epoch of a progress event of ``stage``; -1 for any other event."""
    if isinstance(event, ProgressEvent) and event.stage == stage:
        return event.epoch or 0
    return -1


async def _events_until(producer: Producer, job_id: str, seen: list[JobEvent],
                        done: Callable[[JobEvent], bool], timeout: float) -> None:
    """Collect the job's events into ``seen`` (from where it stopped) until ``done(event)``."""
    async def follow() -> None:
        after = seen[-1].id if seen else "0-0"
        async for event in producer.events(job_id, after=after, block_ms=1000):
            seen.append(event)
            if done(event):
                return
    await asyncio.wait_for(follow(), timeout)


async def test_sigkilled_worker_job_resumes_from_checkpoint(url: str, root: Path) -> None:
    """Worker A is SIGKILLed after epoch 2 of 6 has been checkpointed; worker B reclaims the job
    when A's lease runs out and resumes after the checkpoint, so fewer epochs run in total than
    a restart from scratch, and one result is recorded."""
    epochs, prefix = 6, "killtest"  # a queue of its own: the module's worker stays out of it
    redis: Redis = client(url)
    producer = Producer(redis, prefix=prefix)
    try:
        with worker_process(_settings(url, root, redis_prefix=prefix), root / "a.log") as a:
            sub = await producer.submit_training(TrainingRequest(
                model_type="vgg", data_path="builtin:digits",
                hyperparameters={"epochs": epochs}, framework_override=WORKER_TYPE))
            seen: list[JobEvent] = []
            await _events_until(producer, sub.job_id, seen,
                                lambda e: _epoch(e, "evaluating") >= 2, timeout=300)
            a.send_signal(signal.SIGKILL)
            a.wait()
        with worker_process(_settings(url, root, redis_prefix=prefix), root / "b.log"):
            await _events_until(producer, sub.job_id, seen, lambda e: e.type in (
                "succeeded", "failed", "cancelled"), timeout=300)
        result = await producer.result(sub.job_id, timeout=5)
        record = await producer.get(sub.job_id)
    finally:
        await redis.aclose()
    resumed_at = result["resumed_from_epoch"]
    assert resumed_at is not None and resumed_at >= 2, result
    assert result["epochs_run"] == epochs - resumed_at < epochs  # not from scratch
    assert result["metrics"]["accuracy"] >= 0.8
    starts = [e for e in seen if e.type == "started"]
    assert [getattr(s, "resumed", None) for s in starts] == [False, True]
    assert len({getattr(s, "worker", None) for s in starts}) == 2  # B is another worker
    assert any(getattr(e, "stage", "") == "resumed" for e in seen)
    assert sum(e.type == "succeeded" for e in seen) == 1
    assert record.status is JobStatus.SUCCEEDED and record.result == result


async def test_cancel_mid_training(url: str, root: Path, producer: Producer,
                                   serving: subprocess.Popen[bytes]) -> None:
    """A running job stops at a step boundary: cancelled, its checkpoint removed, the worker
    free for the next job."""
    sub = await producer.submit_training(TrainingRequest(
        model_type="resnet", data_path="builtin:digits", hyperparameters={"epochs": 50},
        framework_override=WORKER_TYPE))
    seen: list[JobEvent] = []
    await _events_until(producer, sub.job_id, seen, lambda e: _epoch(e, "evaluating") >= 1,
                        timeout=300)  # a checkpoint exists now
    assert (root / "artifacts" / sub.job_id).is_dir()
    assert await producer.cancel(sub.job_id) is JobStatus.RUNNING  # the worker will stop it
    await _events_until(producer, sub.job_id, seen, lambda e: e.type in (
        "succeeded", "failed", "cancelled"), timeout=60)
    assert seen[-1].type == "cancelled"
    record = await producer.get(sub.job_id)
    assert record.status is JobStatus.CANCELLED
    last_epoch = max(_epoch(e, "training") for e in seen)
    assert last_epoch < 50
    assert not list((root / "artifacts" / sub.job_id).glob("checkpoint*"))
    # The worker is free again.
    quick = await producer.submit_training(TrainingRequest(
        model_type="alexnet", data_path="builtin:digits", hyperparameters={"epochs": 1},
        framework_override=WORKER_TYPE))
    assert (await producer.result(quick.job_id, timeout=120))["epochs_run"] == 1
    assert serving.poll() is None


async def test_workers_sharing_only_redis_and_s3_resume_and_serve(url: str, root: Path,
                                                                  s3_server: S3Server) -> None:
    """ARTIFACT_URI=s3://...: worker A (its own empty ARTIFACT_ROOT) is SIGKILLed after a
    checkpoint reached S3; worker B (another empty dir) resumes from that checkpoint; worker C
    (a third) serves inference by model_id. No filesystem is shared: only Redis and the store."""
    epochs, prefix, store = 6, "s3kill", s3_server.uri(f"e2e-{uuid.uuid4().hex[:8]}")

    def on(name: str) -> WorkerSettings:
        (root / name).mkdir()
        return _settings(url, root / name, redis_prefix=prefix, artifact_uri=store,
                         artifact_s3_endpoint_url=s3_server.endpoint_url)
    redis: Redis = client(url)
    producer, s3 = Producer(redis, prefix=prefix), s3_server.filesystem()
    seen: list[JobEvent] = []
    try:
        with worker_process(on("s3-a"), root / "s3-a.log", extra_env=s3_server.env) as a:
            sub = await producer.submit_training(TrainingRequest(
                model_type="vgg", data_path="builtin:digits",
                hyperparameters={"epochs": epochs}, framework_override=WORKER_TYPE))
            await _events_until(producer, sub.job_id, seen,
                                lambda e: _epoch(e, "evaluating") >= 1, timeout=300)
            a.send_signal(signal.SIGKILL)
            a.wait()
        checkpoint = f"{store.removeprefix('s3://')}/{sub.job_id}/checkpoint.pt"
        assert s3.exists(checkpoint)
        with worker_process(on("s3-b"), root / "s3-b.log", extra_env=s3_server.env):
            await _events_until(producer, sub.job_id, seen, lambda e: e.type in (
                "succeeded", "failed", "cancelled"), timeout=300)
        result = await producer.result(sub.job_id, timeout=5)
        assert not s3.exists(checkpoint)  # the finished job's checkpoint is gone
        c = on("s3-c")
        assert list(c.artifact_root.glob("*")) == []
        with worker_process(c, root / "s3-c.log", extra_env=s3_server.env):
            from sklearn.datasets import load_digits

            digits = load_digits()
            out = await producer.submit_inference(InferenceRequest(
                model_id=sub.job_id, inputs=digits.data[:30].tolist()))
            served = await producer.result(out.job_id, timeout=120)
    finally:
        await redis.aclose()
    resumed_at = result["resumed_from_epoch"]
    assert resumed_at is not None and resumed_at >= 1, result
    assert result["epochs_run"] == epochs - resumed_at < epochs
    starts = [e for e in seen if e.type == "started"]
    assert [getattr(s, "resumed", None) for s in starts] == [False, True]
    assert len({getattr(s, "worker", None) for s in starts}) == 2
    hits = sum(int(p == t) for p, t in zip(served["predictions"], digits.target[:30],
                                           strict=True))
    assert hits >= 20, served["predictions"]
    assert (c.artifact_root / sub.job_id / "model.pt").is_file()  # C's cache of the model
