"""The worker-type catalogue and job routing: plain data, no I/O.

A worker type is one framework stack in one environment. The gateway routes each job to exactly
one type; workers of that type read only that type's streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Device(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


TORCH_MODELS = frozenset({"bert", "transformer", "gpt", "resnet", "vgg", "alexnet"})
TORCH_VISION_MODELS = frozenset({"resnet", "vgg", "alexnet"})
TF_MODELS = frozenset({"inception", "mobilenet", "efficientnet"})
SKLEARN_MODELS = frozenset({"random_forest", "svm", "logistic_regression"})
DIAGNOSTIC_MODELS = frozenset({"noop", "sleep", "fail", "gpu_sim", "redis_io"})
# Model types that run without a data_path.
DATA_FREE_MODELS = DIAGNOSTIC_MODELS


@dataclass(frozen=True, slots=True)
class WorkerType:
    """One entry of the catalogue."""

    name: str
    framework: str  # MODEL_FRAMEWORK a worker of this type must declare
    module: str  # the importable distribution whose version is checked at start
    version_spec: str  # PEP 440 range the loaded framework must satisfy
    device: Device
    extra: str | None  # uv extra that installs the stack (None: part of the base install)
    model_types: frozenset[str]

    @property
    def install_command(self) -> str:
        if self.extra is None:
            return "uv sync"
        return f"uv sync --extra {self.extra}"


CATALOGUE: dict[str, WorkerType] = {
    wt.name: wt
    for wt in (
        WorkerType("pytorch-2.0", "pytorch", "torch", ">=2.0,<2.1", Device.CPU, "pytorch_2_0",
                   TORCH_MODELS),
        WorkerType("pytorch-2.0-gpu", "pytorch", "torch", ">=2.0,<2.1", Device.GPU,
                   "pytorch_2_0_gpu",
                   TORCH_MODELS),
        WorkerType("pytorch-2.1", "pytorch", "torch", ">=2.1,<2.2", Device.CPU, "pytorch_2_1",
                   TORCH_MODELS),
        WorkerType("pytorch-2.1-gpu", "pytorch", "torch", ">=2.1,<2.2", Device.GPU,
                   "pytorch_2_1_gpu", TORCH_MODELS),
        WorkerType("tensorflow", "tensorflow", "tensorflow", ">=2.13,<2.14", Device.CPU,
                   "tensorflow", TF_MODELS),
        WorkerType("sklearn", "sklearn", "scikit-learn", ">=1.3,<1.4", Device.CPU, "sklearn",
                   SKLEARN_MODELS),
        WorkerType("diagnostic", "diagnostic", "aiq", ">=0", Device.CPU, None, DIAGNOSTIC_MODELS),
    )
}

DEFAULT_WORKER_TYPE = "pytorch-2.1"

# Model type -> (CPU worker type, GPU worker type or None). Order of routing (seed):
# framework_override, then model type + requires_gpu, then the default.
ROUTES: dict[str, tuple[str, str | None]] = {
    **{m: ("pytorch-2.1", "pytorch-2.1-gpu") for m in TORCH_MODELS - TORCH_VISION_MODELS},
    **{m: ("pytorch-2.1", "pytorch-2.0-gpu") for m in TORCH_VISION_MODELS},
    **{m: ("tensorflow", None) for m in TF_MODELS},
    **{m: ("sklearn", None) for m in SKLEARN_MODELS},
    **{m: ("diagnostic", None) for m in DIAGNOSTIC_MODELS},
}

KNOWN_MODEL_TYPES: frozenset[str] = frozenset(ROUTES)


class RoutingError(ValueError):
    """The request names a combination no worker type serves."""


def route(
    model_type: str, requires_gpu: bool = False, framework_override: str | None = None
) -> str:
    """Pick the worker type for a job; raises RoutingError with a human message."""
    if framework_override is not None:
        wt = CATALOGUE.get(framework_override)
        if wt is None:
            known = ", ".join(sorted(CATALOGUE))
            raise RoutingError(f"unknown worker type {framework_override!r}; known: {known}")
        if model_type not in wt.model_types:
            raise RoutingError(f"worker type {wt.name!r} does not serve model type {model_type!r}")
        if requires_gpu and wt.device is not Device.GPU:
            raise RoutingError(f"requires_gpu is true but worker type {wt.name!r} is CPU-only")
        return wt.name
    if model_type not in ROUTES:
        return DEFAULT_WORKER_TYPE
    cpu, gpu = ROUTES[model_type]
    if requires_gpu:
        if gpu is None:
            raise RoutingError(f"no GPU worker type serves model type {model_type!r}")
        return gpu
    return cpu
