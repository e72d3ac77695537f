"""TensorFlow jobs through the whole queue: a real ``tensorflow`` worker process, real Redis,
the Python API a client uses. Each model type trains on scikit-learn's digits to better than
chance (0.1: ten classes) on the held-out split, then serves an inference job by its
``model_id``. Runs only in the tensorflow environment (``aiq env install tensorflow``; the
README's test command runs it there)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("tensorflow")


from schemas.requests import InferenceRequest, TrainingRequest
from streams.producer import Producer
from tests.support import results_within, settings_for, worker_process

# Training the three models takes about 120 s on a quiet 2-core machine; sized for one three
# times slower (the fixture runs inside the first test's timeout).
TRAIN_S = 540
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(TRAIN_S + 60)]
# Sized to learn in seconds on a CPU: MobileNetV2 on the 8x8 digits upsampled to 32x32,
# InceptionV3 at its minimum 75x75, EfficientNetB0 at 32x32.
MODELS: dict[str, dict[str, Any]] = {
    "mobilenet": {"epochs": 3, "batch_size": 32},
    "inception": {"epochs": 3, "batch_size": 32, "max_samples": 600},
    "efficientnet": {"epochs": 3, "batch_size": 32, "max_samples": 900},
}


@pytest.fixture(scope="module")
def worker(url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[subprocess.Popen[bytes]]:
    root = tmp_path_factory.mktemp("tfq")
    settings = settings_for(url, root, "tensorflow", lease_timeout_s=10.0,
                            max_concurrent_jobs=1)
    with worker_process(settings, root / "worker.log") as proc:
        yield proc


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def trained(producer: Producer, worker: subprocess.Popen[bytes]
                  ) -> dict[str, dict[str, Any]]:
    jobs = {}
    for model_type, hp in MODELS.items():
        sub = await producer.submit_training(TrainingRequest(
            model_type=model_type, data_path="builtin:digits", hyperparameters=hp))
        assert sub.worker_type == "tensorflow"  # routed by model type
        jobs[model_type] = sub.job_id
    return await results_within(producer, jobs, TRAIN_S)


@pytest.mark.parametrize("model_type", list(MODELS))
async def test_model_learns_digits_and_serves(trained: dict[str, dict[str, Any]],
                                              producer: Producer, model_type: str) -> None:
    import tensorflow as tf
    from sklearn.datasets import load_digits

    result = trained[model_type]
    print(model_type, result["metrics"], result["duration_s"])
    assert result["metrics"]["accuracy"] > 0.2, result["history"]  # chance: 0.1
    assert result["framework"] == "tensorflow"
    assert result["framework_version"] == tf.__version__
    assert result["epochs_run"] == MODELS[model_type]["epochs"]
    digits = load_digits()
    sub = await producer.submit_inference(InferenceRequest(
        model_id=result["model_id"], inputs=digits.data[:20].tolist()))
    assert sub.worker_type == "tensorflow"
    out = await producer.result(sub.job_id, timeout=300)
    assert out["n"] == len(out["predictions"]) == 20
    assert all(p in range(10) for p in out["predictions"])
