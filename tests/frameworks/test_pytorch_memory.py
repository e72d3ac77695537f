"""PyTorch's side of GPU memory management, without a GPU: CUDA OOM becomes a ``cuda_oom``
failure raised after the framework's exception (and the tensors its traceback holds) is gone,
memory is released after every job, and the device GPU admission chose is the one used.
Runs in a PyTorch environment (``.venvs/pytorch_2_1/bin/python -m pytest``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from consumers.frameworks import pytorch  # noqa: E402
from consumers.frameworks.base import CudaOutOfMemory, FailJob, JobContext  # noqa: E402
from schemas.records import JobMessage  # noqa: E402
from schemas.status import JobKind  # noqa: E402

JOB_ID = "job_00000000-0000-4000-8000-000000000000"


def context(tmp_path: Path, device: str, **hp: Any) -> JobContext:
    message = JobMessage(job_id=JOB_ID, kind=JobKind.TRAINING, model_type="resnet",
                         data_path="builtin:digits", hyperparameters={"batch_size": 64, **hp})
    return JobContext(message, tmp_path, tmp_path / "artifacts", extra={"device": device})


def no_progress(stage: str, **fields: Any) -> None:
    return None


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory (Tried to allocate 2 GiB)\nCUDA kernel errors …"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
                 " Tried to allocate"),
])
def test_cuda_oom_is_a_cuda_oom_failure_raised_after_memory_is_released(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: RuntimeError) -> None:
    released: list[Any] = []

    def oom(*args: Any) -> dict[str, Any]:
        raise error

    def release(device: Any) -> None:
        released.append(sys.exc_info()[1])  # the exception being handled, if any

    monkeypatch.setattr(pytorch.PytorchFramework, "_train", oom)
    monkeypatch.setattr(pytorch, "release", release)
    with pytest.raises(CudaOutOfMemory) as caught:
        pytorch.PytorchFramework().train(context(tmp_path, "cpu"), no_progress)
    assert caught.value.code == "cuda_oom"
    assert "batch_size=64" in str(caught.value) and "Tried to allocate" in str(caught.value)
    # released once, with no exception (and so no traceback holding tensors) alive
    assert released == [None]
    assert caught.value.__cause__ is None and caught.value.__context__ is None


@pytest.mark.parametrize("error", [FailJob("bad data", code="invalid_data"),
                                   RuntimeError("mat1 and mat2 shapes cannot be multiplied")])
def test_other_errors_release_memory_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         error: Exception) -> None:
    released: list[Any] = []

    def broken(*args: Any) -> dict[str, Any]:
        raise error

    monkeypatch.setattr(pytorch.PytorchFramework, "_train", broken)
    monkeypatch.setattr(pytorch, "release", released.append)
    with pytest.raises(type(error)):
        pytorch.PytorchFramework().train(context(tmp_path, "cpu"), no_progress)
    assert len(released) == 1


def test_device_given_by_admission_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    ctx = context(tmp_path, "cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pytorch.device_for({}, ctx) == torch.device("cuda:1")
    assert pytorch.device_for({"device": "cuda"}, ctx) == torch.device("cuda:1")
    assert pytorch.device_for({"device": "cpu"}, ctx) == torch.device("cpu")
    assert pytorch.device_for({}, context(tmp_path, "cuda")) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FailJob, match="sees no GPU"):
        pytorch.device_for({}, ctx)
    assert pytorch.device_for({}, context(tmp_path, "cpu")) == torch.device("cpu")
