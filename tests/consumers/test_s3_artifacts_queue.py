"""Workers that share nothing but Redis and an S3 artifact store (ARTIFACT_URI=s3://...):
a scikit-learn model trained by worker A serves inference on worker B, each a process of its
own with its own empty ARTIFACT_ROOT."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from schemas.requests import InferenceRequest, TrainingRequest
from schemas.status import JobStatus
from streams.producer import Producer
from tests.s3_server import BUCKET, S3Server
from tests.support import settings_for, worker_process

pytest.importorskip("sklearn")
pytestmark = pytest.mark.slow


def _s3_settings(url: str, tmp: Path, s3: S3Server, prefix: str, **overrides: Any) -> Any:
    tmp.mkdir()
    return settings_for(url, tmp, "sklearn", artifact_uri=s3.uri(prefix),
                        artifact_s3_endpoint_url=s3.endpoint_url, **overrides)


async def test_a_model_trained_on_one_worker_serves_on_another(
        redis: Redis, redis_url: str, tmp_path: Path, s3_server: S3Server) -> None:
    from sklearn.datasets import load_iris

    producer, prefix = Producer(redis), f"q-{uuid.uuid4().hex[:8]}"
    a = _s3_settings(redis_url, tmp_path / "a", s3_server, prefix)
    with worker_process(a, tmp_path / "a.log", extra_env=s3_server.env):
        sub = await producer.submit_training(TrainingRequest(
            model_type="random_forest", data_path="builtin:iris",
            hyperparameters={"n_estimators": 20}))  # type: ignore[arg-type]
        trained = await producer.wait(sub.job_id, timeout=90)
    assert trained.status is JobStatus.SUCCEEDED, trained.error
    keys = sorted(s3_server.filesystem().find(f"{BUCKET}/{prefix}/{sub.job_id}"))
    assert keys == [f"{BUCKET}/{prefix}/{sub.job_id}/{name}"
                    for name in ("metadata.json", "model.joblib")]
    shutil.rmtree(tmp_path / "a")  # A's host is gone: only S3 holds the model now

    b = _s3_settings(redis_url, tmp_path / "b", s3_server, prefix)
    assert not (b.artifact_root / sub.job_id).exists()
    rows = load_iris().data[:10].tolist()
    with worker_process(b, tmp_path / "b.log", extra_env=s3_server.env):
        first = await producer.submit_inference(InferenceRequest(model_id=sub.job_id,
                                                                 inputs=rows))
        predicted = await producer.wait(first.job_id, timeout=60)
        assert predicted.status is JobStatus.SUCCEEDED, predicted.error
        assert (b.artifact_root / sub.job_id / "model.joblib").is_file()  # B's cache
    assert predicted.result is not None
    assert predicted.result["predictions"] == load_iris().target[:10].tolist()
