"""scikit-learn jobs through the queue: train on a built-in dataset, then infer by model_id."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from schemas.requests import InferenceRequest, TrainingRequest
from schemas.status import JobStatus
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.support import running_worker, settings_for

pytest.importorskip("sklearn")


@pytest.mark.parametrize("model_type", ["random_forest", "svm", "logistic_regression"])
async def test_train_then_infer(redis: Redis, redis_url: str, tmp_path: Path,
                                model_type: str) -> None:
    from sklearn.datasets import load_digits

    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, "sklearn")):
        sub = await producer.submit_training(TrainingRequest(
            model_type=model_type, data_path="builtin:digits",
            hyperparameters={"n_estimators": 50}))  # type: ignore[arg-type]
        assert sub.worker_type == "sklearn"
        trained = await producer.wait(sub.job_id, timeout=60)
        assert trained.status is JobStatus.SUCCEEDED, trained.error
        assert trained.result is not None
        assert trained.result["metrics"]["accuracy"] >= 0.9
        assert trained.result["framework"] == "sklearn"
        assert trained.result["framework_version"].startswith("1.3.")
        digits = load_digits()
        rows = digits.data[:20].tolist()
        inf = await producer.submit_inference(InferenceRequest(model_id=sub.job_id, inputs=rows))
        predicted = await producer.wait(inf.job_id, timeout=30)
    assert predicted.status is JobStatus.SUCCEEDED, predicted.error
    assert predicted.result is not None
    hits = sum(p == t for p, t in zip(predicted.result["predictions"], digits.target[:20],
                                      strict=True))
    assert hits >= 18
    stages = [f.get("data", "") for _, f in
              await redis.xrange(QueueKeys("sklearn").job_events(sub.job_id))]
    assert any("training" in s for s in stages) and any("evaluating" in s for s in stages)


async def test_bad_data_fails_without_retry(redis: Redis, redis_url: str, tmp_path: Path
                                            ) -> None:
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, "sklearn")
    (settings.data_root / "bad.csv").write_text("a,b,label\n1,x,0\n2,3,1\n")
    async with running_worker(settings):
        sub = await producer.submit_training(TrainingRequest(
            model_type="random_forest", data_path="bad.csv"))
        rec = await producer.wait(sub.job_id, timeout=30)
        escape = await producer.submit_training(TrainingRequest(
            model_type="svm", data_path="../../etc/passwd"))
        rec2 = await producer.wait(escape.job_id, timeout=30)
    assert rec.status is JobStatus.FAILED and rec.attempt == 1 and rec.error is not None
    assert rec.error.code == "invalid_data" and "line 2" in rec.error.message
    assert rec2.status is JobStatus.FAILED and rec2.error is not None
    assert rec2.error.code == "data_path_outside_root"
