"""What a TensorFlow training job asks for: its hyperparameters, read and checked into a
``TrainSpec`` before any data is loaded, and the names shared by the package's modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumers.frameworks.base import FailJob
from consumers.frameworks.params import Params, bad

FRAMEWORK = "tensorflow"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoint"
MIN_SIZE = {"mobilenet": 32, "inception": 75, "efficientnet": 32}  # keras' minimum input side
IMAGE_BUILTINS = ("digits",)
_COMMON = frozenset({"epochs", "learning_rate", "batch_size", "optimizer", "test_size",
                     "random_state", "max_samples", "image_size", "bn_momentum", "weights_path",
                     "label_column", "image_shape"})
_PER_MODEL = {"mobilenet": frozenset({"alpha"}), "inception": frozenset(),
              "efficientnet": frozenset()}



# -- hyperparameters -----------------------------------------------------------------------------









def _image_shape(hp: dict[str, Any]) -> tuple[int, int, int] | None:
    value = hp.get("image_shape")
    if value is None:
        return None
    ok = isinstance(value, list | tuple) and len(value) in (2, 3) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise bad("image_shape", "[height, width] or [height, width, channels]", value)
    return (value[0], value[1], value[2] if len(value) == 3 else 1)


@dataclass(frozen=True, slots=True)
class TrainSpec:
    """Validated hyperparameters of one training job."""

    model_type: str
    epochs: int
    learning_rate: float
    batch_size: int
    optimizer: str
    test_size: float
    seed: int
    max_samples: int | None
    image_size: int | None
    alpha: float
    bn_momentum: float
    weights_path: str | None
    label_column: str | None
    image_shape: tuple[int, int, int] | None


def _model_type(model_type: str) -> str:
    if model_type not in MIN_SIZE:
        raise FailJob(f"model type {model_type!r} is not served by the tensorflow framework; "
                         f"known: {', '.join(sorted(MIN_SIZE))}", code="unsupported_model_type")
    return model_type


def _optimizer(hp: dict[str, Any]) -> str:
    value = hp.get("optimizer", "adam")
    if value not in ("adam", "sgd", "rmsprop"):
        raise bad("optimizer", "one of adam, sgd, rmsprop", value)
    return str(value)


def parse_spec(model_type: str, hp: dict[str, Any]) -> TrainSpec:
    """Validate ``hp`` for ``model_type``; defaults train in seconds on a CPU."""
    spec = TrainSpec(
        model_type=_model_type(model_type), epochs=Params(hp).integer("epochs", 3, 1, 10_000),
        learning_rate=Params(hp).number("learning_rate", 1e-3, gt=0.0, le=10.0),
        batch_size=Params(hp).integer("batch_size", 32, 1, 65_536), optimizer=_optimizer(hp),
        test_size=Params(hp).number("test_size", 0.2, gt=0.0, lt=1.0),
        seed=Params(hp).integer("random_state", 0, 0, 2**31 - 1),
        max_samples=Params(hp).integer_or_none("max_samples", None, 4, 10_000_000),
        image_size=Params(hp).integer_or_none("image_size", None, 1, 1024),
        alpha=Params(hp).number("alpha", 0.35, gt=0.0, lt=4.0),
        bn_momentum=Params(hp).number("bn_momentum", 0.9, gt=0.0, lt=1.0),
        weights_path=Params(hp).text("weights_path"),
        label_column=Params(hp).text("label_column"), image_shape=_image_shape(hp))
    minimum = MIN_SIZE[model_type]
    if spec.image_size is not None and spec.image_size < minimum:
        raise bad("image_size", f">= {minimum} for {model_type}", spec.image_size)
    return spec


def _ignored(model_type: str, hp: dict[str, Any]) -> list[str]:
    return sorted(k for k in hp if k not in _COMMON | _PER_MODEL[model_type])


