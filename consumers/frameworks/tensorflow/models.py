"""TensorFlow / Keras side of the ``tensorflow`` framework: models, fit, checkpoints, saving.

Imported only by ``consumers.frameworks.tensorflow`` when a TensorFlow job runs (it imports
TensorFlow at module level). Importing it configures TensorFlow once for the process: GPU memory
growth on, and at most ``AIQ_TF_INTRA_OP_THREADS`` (default 2) threads per CPU op.

Models are ``keras.applications`` built from their configs (``weights=None``; no hub downloads)
on top of a small preprocessing stem, so a saved ``model.keras`` takes the images exactly as the
data holds them: ``Rescaling`` (pixel range -> the range the architecture expects) ->
``Resizing`` (up to the architecture's minimum size) -> grayscale repeated to 3 channels.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from consumers.frameworks.base import FailJob, Progress


def _configure() -> None:
    """GPU memory growth and a CPU thread cap; a no-op once TensorFlow's runtime is up."""
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError, ValueError):  # runtime already initialized
            tf.config.experimental.set_memory_growth(gpu, True)
    threads = int(os.environ.get("AIQ_TF_INTRA_OP_THREADS", "2") or 0)
    try:
        if threads > 0:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime was initialized by someone else first
        pass


_configure()

CHECKPOINT_PREFIX = "ckpt"
_KERAS_CONFIG = "config.json"  # members of a Keras 2.13 ``.keras`` file
_KERAS_WEIGHTS = "model.weights.h5"


@dataclass(frozen=True, slots=True)
class Arch:
    """One architecture: its builder and the pixel range it expects."""

    build: Callable[..., Any]
    pixel_range: tuple[float, float]


def _mobilenet(inputs: Any, shape: tuple[int, int, int], classes: int, alpha: float) -> Any:
    return tf.keras.applications.MobileNetV2(input_tensor=inputs, input_shape=shape, alpha=alpha,
                                             weights=None, include_top=True, classes=classes)


def _inception(inputs: Any, shape: tuple[int, int, int], classes: int, alpha: float) -> Any:
    del alpha  # InceptionV3 has no width multiplier
    return tf.keras.applications.InceptionV3(input_tensor=inputs, input_shape=shape,
                                             weights=None, include_top=True, classes=classes)


def _efficientnet(inputs: Any, shape: tuple[int, int, int], classes: int, alpha: float) -> Any:
    del alpha  # EfficientNetB0's width is fixed by its config
    return tf.keras.applications.EfficientNetB0(input_tensor=inputs, input_shape=shape,
                                                weights=None, include_top=True, classes=classes)


ARCHS: dict[str, Arch] = {
    "mobilenet": Arch(_mobilenet, (-1.0, 1.0)),
    "inception": Arch(_inception, (-1.0, 1.0)),
    "efficientnet": Arch(_efficientnet, (0.0, 255.0)),  # it rescales 0..255 itself
}


def _stem(arch: Arch, input_shape: tuple[int, int, int], target: tuple[int, int],
          pixel_scale: float) -> Any:
    """The preprocessed image tensor: rescale, resize, grayscale -> 3 channels."""
    inputs = tf.keras.Input(shape=input_shape, name="image")
    low, high = arch.pixel_range
    x = tf.keras.layers.Rescaling((high - low) / pixel_scale, offset=low, name="pixels")(inputs)
    if tuple(input_shape[:2]) != target:
        x = tf.keras.layers.Resizing(*target, interpolation="bilinear", name="upsample")(x)
    if input_shape[2] == 1:
        x = tf.keras.layers.Concatenate(name="to_rgb")([x, x, x])
    return x


def build_model(model_type: str, input_shape: tuple[int, int, int], classes: int, *,
                target: tuple[int, int], pixel_scale: float, alpha: float,
                bn_momentum: float) -> Any:
    """A fresh (untrained) classifier for images of ``input_shape``."""
    arch = ARCHS[model_type]
    x = _stem(arch, input_shape, target, pixel_scale)
    channels = 3 if input_shape[2] == 1 else input_shape[2]
    try:
        model = arch.build(x, (*target, channels), classes, alpha)
    except ValueError as exc:  # keras' own shape checks
        raise FailJob(f"cannot build {model_type} for input {input_shape}: {exc}",
                         code="invalid_data") from exc
    for layer in model.layers:  # short from-scratch runs: let BN statistics follow quickly
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    return model  # the application model starts at the stem's Input


def set_seed(seed: int) -> None:
    """Reproducible initial weights and shuffling (process-wide Python/NumPy/TF seeds)."""
    tf.keras.utils.set_random_seed(seed)


def load_weights(model: Any, path: Path, shown: str | None = None) -> None:
    """Initial weights from a local file; ``.h5`` files match layers by name and skip layers
    whose shapes differ (e.g. an ImageNet classifier head). ``shown``: the name messages use."""
    try:
        if path.suffix in {".h5", ".hdf5"}:
            model.load_weights(str(path), by_name=True, skip_mismatch=True)
        else:
            model.load_weights(str(path))
    except (OSError, ValueError, KeyError, tf.errors.OpError) as exc:
        raise FailJob(f"weights_path {shown or path.name!r} could not be loaded into the model: "
                         f"{str(exc)[:300]}", code="invalid_weights") from exc


def optimizer(name: str, learning_rate: float) -> Any:
    classes = {"adam": tf.keras.optimizers.Adam, "sgd": tf.keras.optimizers.SGD,
               "rmsprop": tf.keras.optimizers.RMSprop}
    return classes[name](learning_rate=learning_rate)


def compile_model(model: Any, opt: Any) -> None:
    model.compile(optimizer=opt, loss=tf.keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    opt.build(model.trainable_variables)  # slot variables exist before a checkpoint restore


# -- checkpoints ---------------------------------------------------------------------------------

def write_checkpoint(model: Any, opt: Any, directory: Path) -> None:
    """Weights and optimizer state (slots, iterations) into ``directory`` (created)."""
    directory.mkdir(parents=True)
    tf.train.Checkpoint(model=model, optimizer=opt).write(str(directory / CHECKPOINT_PREFIX))


def restore_checkpoint(model: Any, opt: Any, directory: Path) -> None:
    """Restore what ``write_checkpoint`` wrote; raises ``ValueError`` when it does not fit."""
    status = tf.train.Checkpoint(model=model, optimizer=opt).read(
        str(directory / CHECKPOINT_PREFIX))
    try:
        status.assert_existing_objects_matched()
    except AssertionError as exc:
        raise ValueError(str(exc)[:300]) from exc


# -- training ------------------------------------------------------------------------------------

class JobCallback(tf.keras.callbacks.Callback):  # type: ignore[misc]
    """Reports every batch through ``progress`` (whose CancelRequested / StopRequested propagate
    out of ``fit``) and runs ``on_epoch`` (checkpoint + report) after each epoch."""

    def __init__(self, progress: Progress, epochs: int, steps: int,
                 on_epoch: Callable[[int, dict[str, float]], None]) -> None:
        super().__init__()
        self.progress = progress
        self.epochs = epochs
        self.steps = steps
        self.on_epoch = on_epoch
        self.epoch = 0
        self.error: BaseException | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        done = (self.epoch - 1) * self.steps + batch + 1
        self._call(lambda: self.progress(
            "training", percent=10 + 80 * done / (self.epochs * self.steps), epoch=self.epoch,
            epochs=self.epochs, step=batch + 1, steps=self.steps, loss=_num(logs.get("loss")),
            metrics=_metrics(logs, ("accuracy",))))

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._call(lambda: self.progress("validating", epoch=self.epoch, epochs=self.epochs,
                                         step=batch + 1))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {k: v for k, v in ((k, _num(v)) for k, v in (logs or {}).items())
                  if v is not None}
        self._call(lambda: self.on_epoch(epoch + 1, values))

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn``; on an exception also stop training, in case Keras ever swallowed it."""
        try:
            fn()
        except BaseException as exc:
            self.error = exc
            if self.model is not None:
                self.model.stop_training = True
            raise


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _metrics(logs: dict[str, Any], names: tuple[str, ...]) -> dict[str, float]:
    out = {n: _num(logs.get(n)) for n in names}
    return {k: round(v, 6) for k, v in out.items() if v is not None}


def fit(model: Any, data: tuple[npt.NDArray[Any], ...], *, batch_size: int, epochs: int,
        initial_epoch: int, callback: JobCallback) -> None:
    x_train, y_train, x_test, y_test = data
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
              validation_data=(x_test, y_test), callbacks=[callback], verbose=0, shuffle=True)
    if callback.error is not None:  # stop_training fallback: never report a stopped run as done
        raise callback.error


def evaluate(model: Any, x: npt.NDArray[Any], y: npt.NDArray[Any], batch_size: int
             ) -> dict[str, float]:
    loss, accuracy = model.evaluate(x, y, batch_size=batch_size, verbose=0)
    return {"val_loss": float(loss), "val_accuracy": float(accuracy)}


# -- saved models --------------------------------------------------------------------------------

def save_model(model: Any, path: Path) -> None:
    """``model.save`` to a temp file beside ``path``, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp, save_format="keras")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_keras_zip(path: Path) -> Any:
    """Load a ``.keras`` file with its weights read from a temp file, not from inside the zip:
    Keras 2.13 reads them through backward seeks in the zip member, each re-reading the member
    from its start (InceptionV3: ~15 s instead of ~1 s)."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read(_KERAS_CONFIG))
        config["compile_config"] = None
        with tempfile.TemporaryDirectory(prefix="aiq-keras-") as tmp:
            weights = Path(tmp) / _KERAS_WEIGHTS
            with archive.open(_KERAS_WEIGHTS) as src, weights.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            model = tf.keras.saving.deserialize_keras_object(config)
            model.load_weights(str(weights))
    return model


def load_model(path: Path) -> Any:
    """A model saved by ``save_model``, uncompiled (inference only)."""
    try:
        try:
            return _load_keras_zip(path)
        except (KeyError, ValueError, TypeError, zipfile.BadZipFile):  # another layout: slow path
            return tf.keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        raise FailJob(f"model file {path.name} could not be loaded: {str(exc)[:300]}",
                         code="model_unreadable") from exc


class _PredictCallback(tf.keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self, progress: Progress, steps: int) -> None:
        super().__init__()
        self.progress = progress
        self.steps = steps

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.progress("predicting", percent=50 + 45 * (batch + 1) / self.steps, step=batch + 1,
                      steps=self.steps)


def predict(model: Any, x: npt.NDArray[Any], batch_size: int, progress: Progress
            ) -> npt.NDArray[np.float32]:
    steps = max(1, math.ceil(len(x) / batch_size))
    out: npt.NDArray[np.float32] = model.predict(
        x, batch_size=batch_size, verbose=0, callbacks=[_PredictCallback(progress, steps)])
    return out


def count_params(model: Any) -> int:
    return int(model.count_params())


def clear_session() -> None:
    tf.keras.backend.clear_session()
