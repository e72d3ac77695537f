"""Image data of TensorFlow jobs: ``.npz`` with ``x`` (NxHxW or NxHxWxC) and ``y`` (N labels),
a CSV of flattened pixels plus a label column, or ``builtin:digits`` (scikit-learn's 8x8
digits); for inference, inline inputs too. Checked and shaped into ``Images``."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from consumers.data import (
    BUILTIN_PREFIX,
    load_builtin,
    load_inputs,
    load_tabular,
    open_resolved,
    resolve_data_path,
)
from consumers.frameworks.base import FailJob
from consumers.frameworks.tensorflow.spec import IMAGE_BUILTINS, TrainSpec

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


def _invalid(shown: str, problem: str) -> FailJob:
    return FailJob(f"{shown}: {problem}", code="invalid_data")


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
        raise FailJob(f"{BUILTIN_PREFIX}{name} is not an image dataset; image datasets: "
                         + ", ".join(BUILTIN_PREFIX + n for n in IMAGE_BUILTINS),
                         code="invalid_data")
    table = load_builtin(name)
    side = math.isqrt(table.n_features)
    x = table.X.reshape(-1, side, side, 1)
    return _images(x, table.y, BUILTIN_PREFIX + name, class_names=table.class_names)


def _read_npz(data_root: Path, path: Path, shown: str, need_labels: bool = True
              ) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
    """Arrays of ``path`` (``resolve_data_path``'s answer for ``shown``), opened safely."""
    try:
        with (open_resolved(data_root, path, shown) as fh,
              np.load(fh, allow_pickle=False) as npz):
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
        x, y = _read_npz(data_root, path, data_path)
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
        raise FailJob(f"class {rare!r} has {counts.min()} sample(s); a stratified "
                         "train/test split needs at least 2 per class", code="invalid_data")
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(images.x, images.y, test_size=spec.test_size,
                                                  random_state=spec.seed, stratify=images.y)
    except ValueError as exc:
        raise FailJob(f"cannot split {len(images.y)} images with test_size="
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
        raise FailJob(f"{shown}: shape {list(x.shape)} does not fit the model's images "
                         f"{list(shape)} (or rows of {h * w * c} pixel values)",
                         code="invalid_inputs")
    return _as_images(x, shown)


def load_inference_images(data_root: Path, source: list[list[Any]] | str,
                          shape: tuple[int, int, int], label_name: str | None
                          ) -> npt.NDArray[np.float32]:
    if not isinstance(source, str):
        if not source:
            raise FailJob("inputs is empty; give at least one image", code="invalid_inputs")
        try:
            x = np.asarray(source, dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise FailJob("inputs must be images (nested lists of numbers, all the same "
                             f"shape) or flat rows of pixel values: {exc}",
                             code="invalid_inputs") from exc
        return _fit_shape(x, shape, "inputs")
    if source.startswith(BUILTIN_PREFIX):
        return _fit_shape(_builtin(source.removeprefix(BUILTIN_PREFIX)).x, shape, source)
    if source.lower().endswith(".npz"):
        x, _ = _read_npz(data_root, resolve_data_path(data_root, source), source,
                         need_labels=False)
        return _fit_shape(x, shape, source)
    rows = load_inputs(data_root, source, n_features=shape[0] * shape[1] * shape[2],
                       label_name=label_name)
    return _fit_shape(rows, shape, source)


