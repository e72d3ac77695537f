"""aiq's own frameworks, declared as plugins and registered like any other, in aiq's
pyproject.toml (``[project.entry-points."aiq.frameworks"]``). Plain data: importing this module
imports no framework.

The parameters are those the frameworks read with ``consumers.frameworks.params.Params`` (the
same bounds; docs/API.md, "Bounds and caps"): the gateway refuses a value out of them at submit,
and the framework checks again when it runs.
"""

from __future__ import annotations

from typing import Any

from schemas.plugins import Device, FrameworkPlugin, ModelType, Parameter, WorkerTypeSpec

INT32 = 2**31 - 1
MAX_BATCH = 65_536
MAX_MB = 16 * 1024 * 1024


def _int(name: str, default: int | None, lo: int, hi: int | None = None, doc: str = "",
         **more: Any) -> Parameter:
    return Parameter(name=name, type="int", default=default, ge=lo, le=hi, doc=doc, **more)


def _float(name: str, default: float | None, doc: str = "", **bounds: Any) -> Parameter:
    return Parameter(name=name, type="float", default=default, doc=doc, **bounds)


def _text(name: str, doc: str = "", choices: tuple[str, ...] = (),
          default: str | None = None) -> Parameter:
    return Parameter(name=name, type="str", default=default, choices=choices, doc=doc)


# --- diagnostic: no framework, no data (demos, tests, benchmarks) -----------------------------

_SLEEP = (
    _float("seconds", 1.0, "how long the job sleeps in all", ge=0, le=24 * 3600),
    _float("steps", 10, "progress reports per epoch", ge=0, le=1_000_000),
    _int("epochs", 1, 1, 10_000),
)
DIAGNOSTIC = FrameworkPlugin(
    framework="diagnostic",
    implementation="consumers.frameworks.diagnostic:DiagnosticFramework",
    doc="jobs without a framework: noop, sleep, fail, gpu_sim, redis_io",
    worker_types=(WorkerTypeSpec(name="diagnostic", distribution="aiq", version_spec=">=0",
                                 model_types=("noop", "sleep", "fail", "gpu_sim",
                                              "redis_io")),),
    model_types=(
        ModelType(name="noop", cpu="diagnostic", needs_data=False, doc="returns at once"),
        ModelType(name="sleep", cpu="diagnostic", needs_data=False, parameters=_SLEEP,
                  doc="sleeps, reporting progress"),
        ModelType(name="fail", cpu="diagnostic", needs_data=False, parameters=(
            _int("fail_times", 1_000_000, 0, 1_000_000, "attempts that fail"),
            _text("error", choices=("fatal", "retryable", "unserializable"),
                  default="fatal")), doc="fails as asked"),
        ModelType(name="gpu_sim", cpu="diagnostic", needs_data=False, parameters=(
            *_SLEEP, _int("batch_size", 32, 1, MAX_BATCH),
            _float("base_mb", 100, ge=0, le=MAX_MB), _float("mb_per_sample", 10, ge=0, le=MAX_MB),
            _float("oom_above", None, "batch sizes above it raise CUDA OOM", ge=0, le=MAX_MB)),
            doc="a simulated GPU job (GPU admission, OOM halving)"),
        ModelType(name="redis_io", cpu="diagnostic", needs_data=False, parameters=(
            _int("round_trips", 1, 0, 10_000, "blocking PINGs to the worker's Redis"),),
            doc="a short job that waits on I/O"),
    ),
)

# --- scikit-learn ---------------------------------------------------------------------------

_SKLEARN_COMMON = (
    _float("test_size", 0.2, "held-out fraction", gt=0, lt=1),
    _int("random_state", 0, 0, 2**32 - 1, nullable=True),
    _text("label_column", "the CSV column with the labels"),
)
_C = {"type": "float", "gt": 0, "le": 1e6}
SKLEARN = FrameworkPlugin(
    framework="sklearn",
    implementation="consumers.frameworks.sklearn:SklearnFramework",
    worker_types=(WorkerTypeSpec(name="sklearn", distribution="scikit-learn",
                                 version_spec=">=1.3,<1.4", extra="sklearn",
                                 model_types=("random_forest", "svm", "logistic_regression")),),
    model_types=(
        ModelType(name="random_forest", cpu="sklearn", parameters=(
            _int("n_estimators", 100, 1, 5_000), _int("max_depth", None, 1, 1_000, nullable=True),
            _int("n_jobs", 1, 1, 64, choices=(-1,)), *_SKLEARN_COMMON)),
        ModelType(name="svm", cpu="sklearn", parameters=(
            Parameter(name="C", default=10.0, **_C),
            Parameter(name="gamma", default="scale", choices=("scale", "auto"), **_C),
            _text("kernel", choices=("rbf", "linear", "poly", "sigmoid"), default="rbf"),
            Parameter(name="probability", type="bool", default=False), *_SKLEARN_COMMON)),
        ModelType(name="logistic_regression", cpu="sklearn", parameters=(
            Parameter(name="C", default=1.0, **_C), _int("max_iter", 1000, 1, 100_000),
            *_SKLEARN_COMMON)),
    ),
)

# --- PyTorch: two versions, CPU and GPU -------------------------------------------------------

_TORCH_COMMON = (
    _int("epochs", 5, 1, 10_000), _float("learning_rate", 1e-3, gt=0, le=10),
    _int("batch_size", 32, 1, MAX_BATCH), _float("weight_decay", 0.01, ge=0, le=10),
    _float("test_size", 0.2, gt=0, le=0.9), _int("seed", None, 0, INT32),
    _int("random_state", 0, 0, INT32), _text("device", choices=("auto", "cpu", "cuda"),
                                             default="auto"),
    _int("threads", None, 1, 256, "intra-op threads on a CPU"),
    _text("weights_path", "initial weights under the data root"),
    _text("label_column"), _text("text_column"),
)
_TORCH_INFERENCE = (_int("batch_size", 64, 1, MAX_BATCH), _text("device", choices=(
    "auto", "cpu", "cuda"), default="auto"), _int("threads", None, 1, 256))
_GENERATION = (_int("max_new_tokens", 20, 1, 2047, "at most max_length - 1"),
               Parameter(name="greedy", type="bool", default=True),
               _float("temperature", 1.0, gt=0, le=100), _int("top_k", 0, 0, 1_000_000),
               _int("seed", 0, 0, INT32))


def _image(name: str, own: tuple[Parameter, ...]) -> ModelType:
    return ModelType(name=name, cpu="pytorch-2.1", gpu="pytorch-2.0-gpu", parameters=(
        *_TORCH_COMMON, _int("width", 16, 4, 256), _int("image_size", None, 4, 1024), *own),
        inference_parameters=_TORCH_INFERENCE)


def _text_model(name: str, hidden: int, heads: int) -> ModelType:
    return ModelType(name=name, cpu="pytorch-2.1", gpu="pytorch-2.1-gpu", parameters=(
        *_TORCH_COMMON, _int("hidden_size", hidden, 8, 4096, "a multiple of num_heads"),
        _int("num_layers", 2, 1, 48), _int("num_heads", heads, 1, 64),
        _int("max_length", 32, 4, 2048), _float("dropout", 0.1, ge=0, le=0.9)),
        inference_parameters=_TORCH_INFERENCE + (_GENERATION if name == "gpt" else ()))


_TORCH_MODELS = ("bert", "transformer", "gpt", "resnet", "vgg", "alexnet")
_DENSE = (_int("hidden", 128, 8, 8192), _float("dropout", 0.2, ge=0, le=0.9))
PYTORCH = FrameworkPlugin(
    framework="pytorch",
    implementation="consumers.frameworks.pytorch:PytorchFramework",
    worker_types=tuple(
        WorkerTypeSpec(name=f"pytorch-{v}{suffix}", distribution="torch",
                       version_spec=f">=2.{v[-1]},<2.{int(v[-1]) + 1}", device=device,
                       extra=f"pytorch_{v.replace('.', '_')}{suffix.replace('-', '_')}",
                       model_types=_TORCH_MODELS)
        for v in ("2.0", "2.1") for suffix, device in (("", Device.CPU), ("-gpu", Device.GPU))),
    model_types=(
        _text_model("bert", 64, 2), _text_model("transformer", 128, 4), _text_model("gpt", 64, 2),
        _image("resnet", (_int("blocks", 1, 1, 8),)), _image("vgg", _DENSE),
        _image("alexnet", _DENSE),
    ),
)

# --- TensorFlow -----------------------------------------------------------------------------


def _keras(name: str, min_size: int, own: tuple[Parameter, ...] = ()) -> ModelType:
    return ModelType(name=name, cpu="tensorflow", parameters=(
        _int("epochs", 3, 1, 10_000), _float("learning_rate", 1e-3, gt=0, le=10),
        _int("batch_size", 32, 1, MAX_BATCH),
        _text("optimizer", choices=("adam", "sgd", "rmsprop"), default="adam"),
        _float("test_size", 0.2, gt=0, lt=1), _int("random_state", 0, 0, INT32),
        _int("max_samples", None, 4, 10_000_000, nullable=True),
        _int("image_size", None, min_size, 1024, f"at least {min_size} for {name}",
             nullable=True),
        _float("bn_momentum", 0.9, gt=0, lt=1), _text("weights_path"), _text("label_column"),
        *own), inference_parameters=(_int("batch_size", 64, 1, MAX_BATCH),))


TENSORFLOW = FrameworkPlugin(
    framework="tensorflow",
    implementation="consumers.frameworks.tensorflow:TensorflowFramework",
    worker_types=(WorkerTypeSpec(name="tensorflow", distribution="tensorflow",
                                 version_spec=">=2.13,<2.14", extra="tensorflow",
                                 model_types=("inception", "mobilenet", "efficientnet")),),
    model_types=(_keras("inception", 75),
                 _keras("mobilenet", 32, (_float("alpha", 0.35, gt=0, lt=4),)),
                 _keras("efficientnet", 32)),
)
