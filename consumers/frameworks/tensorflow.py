"""TensorFlow framework: inception, mobilenet and efficientnet image classifiers (Keras).

Models are ``keras.applications`` built with ``weights=None`` (no hub downloads; an optional
``weights_path`` inside the data root seeds them) and trained from scratch with ``fit``. Progress
is reported every batch, so a cancel or an interrupt stops training at the next batch. Every
epoch ends with a checkpoint (weights + optimizer state) under ``<artifact_dir>/checkpoint``; a
job that runs again after its worker died resumes from it. The finished model is
``<artifact_dir>/model.keras`` (preprocessing included) plus ``metadata.json``.

TensorFlow is imported lazily (``tf_models``), so this module imports without it.

Data: ``.npz`` with ``x`` (NxHxW or NxHxWxC) and ``y`` (N labels), a CSV of flattened pixels
plus a label column, or ``builtin:digits`` (scikit-learn's 8x8 digits).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from consumers import artifacts
from consumers.data import (
    BUILTIN_PREFIX,
    load_builtin,
    load_inputs,
    load_tabular,
    resolve_data_path,
)
from consumers.frameworks.base import JobContext, JobFailure, Progress

FRAMEWORK = "tensorflow"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoint"
MIN_SIZE = {"mobilenet": 32, "inception": 75, "efficientnet": 32}  # keras' minimum input side
IMAGE_BUILTINS = ("digits",)
_BAD = "invalid_hyperparameters"
_COMMON = frozenset({"epochs", "learning_rate", "batch_size", "optimizer", "test_size",
                     "random_state", "max_samples", "image_size", "bn_momentum", "weights_path",
                     "label_column", "image_shape"})
_PER_MODEL = {"mobilenet": frozenset({"alpha"}), "inception": frozenset(),
              "efficientnet": frozenset()}


# -- hyperparameters -----------------------------------------------------------------------------

def _bad(name: str, rule: str, value: Any) -> JobFailure:
    return JobFailure(f"hyperparameter {name!r} must be {rule}, got {value!r}", code=_BAD)


def _int(hp: dict[str, Any], name: str, default: int | None, minimum: int) -> int | None:
    value = hp.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(name, f"an integer >= {minimum}" + (" or null" if default is None else ""),
                   value)
    return value


def _float(hp: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    """A number in the open interval ``(low, high)``."""
    value = hp.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not low < value < high:
        rule = f"a number between {low} and {high} (exclusive)" if math.isfinite(high) \
            else f"a number > {low}"
        raise _bad(name, rule, value)
    return float(value)


def _optional_str(hp: dict[str, Any], name: str) -> str | None:
    value = hp.get(name)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _bad(name, "a non-empty string", value)
    return value


def _image_shape(hp: dict[str, Any]) -> tuple[int, int, int] | None:
    value = hp.get("image_shape")
    if value is None:
        return None
    ok = isinstance(value, list | tuple) and len(value) in (2, 3) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise _bad("image_shape", "[height, width] or [height, width, channels]", value)
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
        raise JobFailure(f"model type {model_type!r} is not served by the tensorflow framework; "
                         f"known: {', '.join(sorted(MIN_SIZE))}", code="unsupported_model_type")
    return model_type


def _optimizer(hp: dict[str, Any]) -> str:
    value = hp.get("optimizer", "adam")
    if value not in ("adam", "sgd", "rmsprop"):
        raise _bad("optimizer", "one of adam, sgd, rmsprop", value)
    return str(value)


def parse_spec(model_type: str, hp: dict[str, Any]) -> TrainSpec:
    """Validate ``hp`` for ``model_type``; defaults train in seconds on a CPU."""
    spec = TrainSpec(
        model_type=_model_type(model_type), epochs=_int(hp, "epochs", 3, 1) or 1,
        learning_rate=_float(hp, "learning_rate", 1e-3, 0.0, math.inf),
        batch_size=_int(hp, "batch_size", 32, 1) or 1, optimizer=_optimizer(hp),
        test_size=_float(hp, "test_size", 0.2, 0.0, 1.0), seed=_int(hp, "random_state", 0, 0) or 0,
        max_samples=_int(hp, "max_samples", None, 4), image_size=_int(hp, "image_size", None, 1),
        alpha=_float(hp, "alpha", 0.35, 0.0, 4.0),
        bn_momentum=_float(hp, "bn_momentum", 0.9, 0.0, 1.0),
        weights_path=_optional_str(hp, "weights_path"),
        label_column=_optional_str(hp, "label_column"), image_shape=_image_shape(hp))
    minimum = MIN_SIZE[model_type]
    if spec.image_size is not None and spec.image_size < minimum:
        raise _bad("image_size", f">= {minimum} for {model_type}", spec.image_size)
    return spec


def _ignored(model_type: str, hp: dict[str, Any]) -> list[str]:
    return sorted(k for k in hp if k not in _COMMON | _PER_MODEL[model_type])


# -- data ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Images:
    """Labelled images: ``x`` NxHxWxC float32, ``y`` class indices into ``classes``."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    classes: list[Any]
    pixel_scale: float  # the largest pixel value of the data (255 for uint8)
    class_names: list[str] | None = None
    label_name: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w, c = self.x.shape[1:]
        return int(h), int(w), int(c)


def _invalid(shown: str, problem: str) -> JobFailure:
    return JobFailure(f"{shown}: {problem}", code="invalid_data")


def _as_images(x: npt.NDArray[Any], shown: str) -> npt.NDArray[np.float32]:
    """NxHxW(xC) numbers -> finite float32 NxHxWxC."""
    if x.dtype.kind not in "uif":
        raise _invalid(shown, f"images must be numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or min(x.shape) == 0:
        raise _invalid(shown, f"images must be NxHxW or NxHxWxC, got shape {x.shape}")
    images = x.astype(np.float32)
    if not np.isfinite(images).all():
        raise _invalid(shown, "images contain NaN or infinite values")
    return images


def _pixel_scale(raw: npt.NDArray[Any], images: npt.NDArray[np.float32]) -> float:
    if raw.dtype == np.uint8:
        return 255.0
    peak = float(np.abs(images).max())
    return peak if peak > 0 else 1.0


def _labels(y: npt.NDArray[Any], n: int, shown: str) -> tuple[npt.NDArray[np.int64], list[Any]]:
    if y.ndim != 1 or len(y) != n:
        raise _invalid(shown, f"labels must be a vector of {n} values (one per image), got "
                              f"shape {y.shape}")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "uiUS":
        raise _invalid(shown, f"labels must be integers or strings, got dtype {y.dtype}")
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise _invalid(shown, f"labels have {len(classes)} distinct value(s); classification "
                              "needs at least 2 classes")
    return index.astype(np.int64), classes.tolist()


def _images(x: npt.NDArray[Any], y: npt.NDArray[Any], shown: str, **extra: Any) -> Images:
    images = _as_images(x, shown)
    index, classes = _labels(np.asarray(y), len(images), shown)
    return Images(images, index, classes, _pixel_scale(x, images), **extra)


def _builtin(name: str) -> Images:
    if name not in IMAGE_BUILTINS:
        load_builtin(name)  # unknown names fail there, with the list of datasets
        raise JobFailure(f"{BUILTIN_PREFIX}{name} is not an image dataset; image datasets: "
                         + ", ".join(BUILTIN_PREFIX + n for n in IMAGE_BUILTINS),
                         code="invalid_data")
    table = load_builtin(name)
    side = math.isqrt(table.n_features)
    x = table.X.reshape(-1, side, side, 1)
    return _images(x, table.y, BUILTIN_PREFIX + name, class_names=table.class_names)


def _read_npz(path: Path, shown: str, need_labels: bool = True
              ) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _invalid(shown, f"not a readable .npz file (numpy.savez, no pickled objects): "
                              f"{exc}") from exc
    x = next((arrays[k] for k in ("x", "X", "images") if k in arrays), None)
    y = next((arrays[k] for k in ("y", "Y", "labels") if k in arrays), None)
    if x is None or (need_labels and y is None):
        raise _invalid(shown, f"expected arrays 'x' (images) and 'y' (labels), found "
                              f"{sorted(arrays) or 'none'}")
    return x, y


def _unflatten(rows: npt.NDArray[Any], shape: tuple[int, int, int] | None, shown: str
               ) -> npt.NDArray[Any]:
    """Flattened pixel rows -> images: ``shape``, else square grayscale, else square RGB."""
    n = rows.shape[1]
    if shape is None:
        side, rgb = math.isqrt(n), math.isqrt(n // 3)
        shape = (side, side, 1) if side * side == n else (rgb, rgb, 3)
    if shape[0] * shape[1] * shape[2] != n:
        raise _invalid(shown, f"{n} pixel columns are not a square image; set hyperparameter "
                              "image_shape to [height, width, channels]")
    return rows.reshape(-1, *shape)


def load_images(data_root: Path, data_path: str, spec: TrainSpec) -> Images:
    """Training images from ``builtin:<name>``, an ``.npz`` or a CSV under the data root."""
    if data_path.startswith(BUILTIN_PREFIX):
        return _builtin(data_path.removeprefix(BUILTIN_PREFIX))
    path = resolve_data_path(data_root, data_path)
    if path.suffix.lower() == ".npz":
        x, y = _read_npz(path, data_path)
        return _images(x, np.asarray(y), data_path)
    if path.suffix.lower() == ".csv":
        table = load_tabular(data_root, data_path, spec.label_column)
        x = _unflatten(table.X, spec.image_shape, data_path)
        return _images(x, table.y, data_path, label_name=table.label_name)
    raise _invalid(data_path, "unsupported file type; use .npz (arrays x, y), .csv (pixel "
                              "columns + label) or builtin:digits")


def _subset(images: Images, limit: int | None, seed: int) -> Images:
    if limit is None or limit >= len(images.y):
        return images
    keep = np.random.default_rng(seed).permutation(len(images.y))[:limit]
    return Images(images.x[keep], images.y[keep], images.classes, images.pixel_scale,
                  images.class_names, images.label_name)


def split(images: Images, spec: TrainSpec) -> tuple[npt.NDArray[Any], ...]:
    """``(x_train, y_train, x_test, y_test)``, stratified and reproducible (``random_state``)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(images.y, minlength=len(images.classes))
    if counts.min() < 2:
        rare = images.classes[int(counts.argmin())]
        raise JobFailure(f"class {rare!r} has {counts.min()} sample(s); a stratified "
                         "train/test split needs at least 2 per class", code="invalid_data")
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(images.x, images.y, test_size=spec.test_size,
                                                  random_state=spec.seed, stratify=images.y)
    except ValueError as exc:
        raise JobFailure(f"cannot split {len(images.y)} images with test_size="
                         f"{spec.test_size}: {exc}", code="invalid_data") from exc
    return x_tr, y_tr, x_te, y_te


def _fit_shape(x: npt.NDArray[Any], shape: tuple[int, int, int], shown: str
               ) -> npt.NDArray[np.float32]:
    """Inference images in the model's input shape (rows of H*W*C values are reshaped)."""
    h, w, c = shape
    if x.ndim == 2 and x.shape[1] == h * w * c:
        x = x.reshape(-1, h, w, c)
    elif x.ndim == 3 and c == 1:
        x = x[..., np.newaxis]
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise JobFailure(f"{shown}: shape {list(x.shape)} does not fit the model's images "
                         f"{list(shape)} (or rows of {h * w * c} pixel values)",
                         code="invalid_inputs")
    return _as_images(x, shown)


def load_inference_images(data_root: Path, source: list[list[Any]] | str,
                          shape: tuple[int, int, int], label_name: str | None
                          ) -> npt.NDArray[np.float32]:
    if not isinstance(source, str):
        if not source:
            raise JobFailure("inputs is empty; give at least one image", code="invalid_inputs")
        try:
            x = np.asarray(source, dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise JobFailure("inputs must be images (nested lists of numbers, all the same "
                             f"shape) or flat rows of pixel values: {exc}",
                             code="invalid_inputs") from exc
        return _fit_shape(x, shape, "inputs")
    if source.startswith(BUILTIN_PREFIX):
        return _fit_shape(_builtin(source.removeprefix(BUILTIN_PREFIX)).x, shape, source)
    if source.lower().endswith(".npz"):
        x, _ = _read_npz(resolve_data_path(data_root, source), source, need_labels=False)
        return _fit_shape(x, shape, source)
    rows = load_inputs(data_root, source, n_features=shape[0] * shape[1] * shape[2],
                       label_name=label_name)
    return _fit_shape(rows, shape, source)


# -- TensorFlow sessions -------------------------------------------------------------------------

_active_jobs = 0
_session_lock = threading.Lock()


@contextlib.contextmanager
def tf_job() -> Iterator[ModuleType]:
    """``tf_models`` for one job; the Keras session is cleared when the last running job ends
    (clearing it under a job still running in another thread would break that job)."""
    global _active_jobs  # noqa: PLW0603 - one process-wide count of running TF jobs
    from consumers.frameworks import tf_models

    with _session_lock:
        _active_jobs += 1
    try:
        yield tf_models
    finally:
        with _session_lock:
            _active_jobs -= 1
            if _active_jobs == 0:
                tf_models.clear_session()
                gc.collect()


# -- checkpoints ---------------------------------------------------------------------------------

class Checkpoints:
    """``<artifact_dir>/checkpoint/epoch-NNNN/`` directories and ``latest.json`` pointing at the
    newest complete one: a checkpoint is written to a temp dir, renamed, and only then named by
    ``latest.json`` (replaced atomically), so a crash at any point leaves a usable checkpoint."""

    def __init__(self, artifact_dir: Path, signature: dict[str, Any]) -> None:
        self.root = artifact_dir / CHECKPOINT_DIR
        self.signature = signature

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint of this same job configuration, if any."""
        try:
            state = artifacts.read_json(self.root / "latest.json")
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("signature") != self.signature:
            return None
        directory = self.root / str(state.get("dir", ""))
        return (directory, state) if directory.is_dir() and state.get("dir") else None

    def save(self, tfm: ModuleType, model: Any, opt: Any, epoch: int,
             history: list[dict[str, float]]) -> None:
        name = f"epoch-{epoch:04d}"
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            tfm.write_checkpoint(model, opt, tmp)
            shutil.rmtree(self.root / name, ignore_errors=True)
            os.replace(tmp, self.root / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        artifacts.write_json_atomic(self.root / "latest.json", {
            "epoch": epoch, "dir": name, "history": history, "signature": self.signature})
        for old in self.root.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -- training ------------------------------------------------------------------------------------

def _target(spec: TrainSpec, shape: tuple[int, int, int]) -> tuple[int, int]:
    if spec.image_size is not None:
        return spec.image_size, spec.image_size
    minimum = MIN_SIZE[spec.model_type]
    return max(shape[0], minimum), max(shape[1], minimum)


class _Training:
    """One training run: build or resume, fit with per-batch progress and per-epoch
    checkpoints, save."""

    def __init__(self, ctx: JobContext, spec: TrainSpec, images: Images, progress: Progress,
                 tfm: ModuleType) -> None:
        self.ctx, self.spec, self.images, self.progress, self.tfm = ctx, spec, images, progress, tfm
        self.target = _target(spec, images.shape)
        msg = ctx.message
        self.checkpoints = Checkpoints(ctx.artifact_dir, {
            "model_type": msg.model_type, "data_path": msg.data_path,
            "hyperparameters": msg.hyperparameters, "input_shape": list(images.shape),
            "classes": images.classes})
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.model, self.opt = self._build()

    def _build(self) -> tuple[Any, Any]:
        images, spec = self.images, self.spec
        self.tfm.set_seed(spec.seed)
        model = self.tfm.build_model(spec.model_type, images.shape, len(images.classes),
                                     target=self.target, pixel_scale=images.pixel_scale,
                                     alpha=spec.alpha, bn_momentum=spec.bn_momentum)
        if spec.weights_path:
            self.tfm.load_weights(model, resolve_data_path(self.ctx.data_root, spec.weights_path))
        opt = self.tfm.optimizer(spec.optimizer, spec.learning_rate)
        self.tfm.compile_model(model, opt)
        return model, opt

    def resume(self) -> None:
        """Continue from this job's last checkpoint when there is one."""
        found = self.checkpoints.latest()
        if found is None:
            self.checkpoints.clear()  # a stale checkpoint of another configuration
            return
        directory, state = found
        try:
            self.tfm.restore_checkpoint(self.model, self.opt, directory)
        except (ValueError, OSError) as exc:
            self.checkpoints.clear()
            self.model, self.opt = self._build()  # partly restored: start over cleanly
            self.progress("training", percent=10, message=f"checkpoint unusable ({exc}); "
                          "training from scratch")
            return
        self.start_epoch = min(int(state["epoch"]), self.spec.epochs)
        self.history = list(state.get("history") or [])
        self.progress("resumed", percent=10 + 80 * self.start_epoch / self.spec.epochs,
                      message=f"resumed from checkpoint after epoch {self.start_epoch}",
                      epoch=self.start_epoch, epochs=self.spec.epochs)

    def _epoch_done(self, epoch: int, logs: dict[str, float]) -> None:
        self.history.append({"epoch": epoch, **{k: round(v, 6) for k, v in logs.items()}})
        self.checkpoints.save(self.tfm, self.model, self.opt, epoch, self.history)
        metrics = {k: round(v, 6) for k, v in logs.items() if k != "loss"}
        self.progress("training", percent=10 + 80 * epoch / self.spec.epochs, epoch=epoch,
                      epochs=self.spec.epochs, loss=logs.get("loss"), metrics=metrics,
                      message=f"epoch {epoch}/{self.spec.epochs} done, checkpoint saved")

    def fit(self, data: tuple[npt.NDArray[Any], ...]) -> dict[str, float]:
        spec = self.spec
        steps = max(1, math.ceil(len(data[0]) / spec.batch_size))
        callback = self.tfm.JobCallback(self.progress, spec.epochs, steps, self._epoch_done)
        before = len(self.history)
        try:
            self.tfm.fit(self.model, data, batch_size=spec.batch_size, epochs=spec.epochs,
                         initial_epoch=self.start_epoch, callback=callback)
        except (ValueError, TypeError) as exc:  # keras' input checks: not transient
            raise JobFailure(f"training failed: {str(exc)[:500]}",
                             code="training_failed") from exc
        if len(self.history) > before:
            last = self.history[-1]
            return {k: last[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                    if k in last}
        return self.tfm.evaluate(self.model, data[2], data[3], spec.batch_size)  # type: ignore[no-any-return]

    def save(self, metadata: dict[str, Any]) -> None:
        directory = self.ctx.artifact_dir
        self.tfm.save_model(self.model, directory / MODEL_FILE)
        artifacts.write_json_atomic(directory / artifacts.METADATA_FILE, metadata)
        self.checkpoints.clear()


def _final_metrics(logs: dict[str, float]) -> dict[str, float]:
    names = {"val_accuracy": "accuracy", "val_loss": "loss", "accuracy": "train_accuracy",
             "loss": "train_loss"}
    return {names[k]: float(v) for k, v in logs.items() if k in names}


class TensorflowFramework:
    """The ``tensorflow`` worker type's framework."""

    name = FRAMEWORK

    def version(self) -> str:
        import tensorflow as tf

        return str(tf.__version__)

    def train(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        spec = parse_spec(msg.model_type, dict(msg.hyperparameters))
        if not msg.data_path:
            raise JobFailure("data_path is required for training", code="data_path_required")
        if spec.weights_path:
            resolve_data_path(ctx.data_root, spec.weights_path)  # fail before loading data
        progress("loading_data", percent=0, message=msg.data_path)
        images = _subset(load_images(ctx.data_root, msg.data_path, spec), spec.max_samples,
                         spec.seed)
        data = split(images, spec)
        progress("building_model", percent=5, message=f"{spec.model_type}, {len(data[0])} "
                 f"training images {list(images.shape)}, {len(images.classes)} classes")
        with tf_job() as tfm:
            run = _Training(ctx, spec, images, progress, tfm)
            run.resume()
            logs = run.fit(data)
            progress("saving", percent=92)
            result = self._result(ctx, run, data, _final_metrics(logs))
            run.save(self._metadata(ctx, images, result))
        progress("saving", percent=100, metrics=result["metrics"], message="model saved")
        return result

    def _result(self, ctx: JobContext, run: _Training, data: tuple[npt.NDArray[Any], ...],
                metrics: dict[str, float]) -> dict[str, Any]:
        msg = ctx.message
        return {
            "metrics": metrics, "history": run.history, "epochs": run.spec.epochs,
            "epochs_run": run.spec.epochs - run.start_epoch,
            "resumed_from_epoch": run.start_epoch or None,
            "n_train": len(data[0]), "n_test": len(data[2]),
            "input_shape": list(run.images.shape), "model_input_size": list(run.target),
            "classes": run.images.classes, "parameters": run.tfm.count_params(run.model),
            "model_type": msg.model_type, "model_id": msg.job_id, "framework": FRAMEWORK,
            "framework_version": self.version(), "artifact": str(ctx.artifact_dir),
            "ignored_hyperparameters": _ignored(msg.model_type, msg.hyperparameters),
        }

    def _metadata(self, ctx: JobContext, images: Images, result: dict[str, Any]
                  ) -> dict[str, Any]:
        keys = ("framework", "framework_version", "model_type", "model_id", "input_shape",
                "model_input_size", "classes", "metrics", "epochs", "parameters")
        return {**{k: result[k] for k in keys}, "model_file": MODEL_FILE,
                "data_path": ctx.message.data_path,
                "hyperparameters": ctx.message.hyperparameters,
                "class_names": images.class_names, "label_name": images.label_name,
                "pixel_scale": images.pixel_scale}

    def infer(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        if not msg.model_id:
            raise JobFailure("model_id is required for inference", code="model_id_required")
        progress("loading_model", percent=0, message=msg.model_id)
        meta = _tensorflow_metadata(ctx, msg.model_id)
        source = msg.inputs if msg.inputs is not None else msg.data_path
        if source is None:
            raise JobFailure("inference needs inputs (images) or a data_path",
                             code="inputs_required")
        progress("loading_data", percent=20)
        shape = (int(meta["input_shape"][0]), int(meta["input_shape"][1]),
                 int(meta["input_shape"][2]))
        x = load_inference_images(ctx.data_root, source, shape, meta.get("label_name"))
        batch_size = _int(msg.parameters, "batch_size", 64, 1) or 64
        progress("predicting", percent=50, message=f"{len(x)} images")
        with tf_job() as tfm:
            model = tfm.load_model(ctx.model_dir(msg.model_id) / MODEL_FILE)
            probabilities = tfm.predict(model, x, batch_size, progress)
        progress("predicting", percent=100)
        return {**_predictions(probabilities, meta), "n": len(x), "model_id": msg.model_id,
                "framework": FRAMEWORK, "framework_version": self.version()}


def _tensorflow_metadata(ctx: JobContext, model_id: str) -> dict[str, Any]:
    meta = artifacts.load_metadata(ctx.artifact_root, model_id)
    if meta.get("framework") != FRAMEWORK:
        raise JobFailure(f"model {model_id!r} was trained with framework "
                         f"{meta.get('framework')!r}, not {FRAMEWORK!r}",
                         code="framework_mismatch")
    if not (ctx.model_dir(model_id) / MODEL_FILE).is_file():
        raise JobFailure(f"model {model_id!r} not found: {MODEL_FILE} is missing",
                         code="model_not_found")
    return meta


def _predictions(probabilities: npt.NDArray[np.float32], meta: dict[str, Any]
                 ) -> dict[str, Any]:
    classes = meta["classes"]
    index = probabilities.argmax(axis=1)
    out: dict[str, Any] = {"predictions": [classes[int(i)] for i in index], "classes": classes,
                           "probabilities": np.round(probabilities, 6).tolist()}
    names = meta.get("class_names")
    if names and len(names) == len(classes):
        out["predicted_names"] = [names[int(i)] for i in index]
    return out
