"""Image data for the PyTorch vision models: ``.npz`` arrays and ``builtin:digits``.

Images are float32 N x C x H x W. An ``.npz`` holds ``x`` (N x H x W, N x C x H x W or
N x H x W x C) and, for training, ``y`` (N labels). ``builtin:digits`` is scikit-learn's
bundled 8x8 digits as 1-channel images. Every problem is a ``FailJob`` naming it.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from consumers.data import BUILTIN_PREFIX, load_builtin, open_resolved, resolve_data_path
from consumers.frameworks.base import FailJob

IMAGE_BUILTINS = ("digits",)
_CHANNELS = (1, 3, 4)


@dataclass(frozen=True, slots=True)
class Images:
    x: npt.NDArray[np.float32]  # N x C x H x W
    y: npt.NDArray[Any] | None
    class_names: list[str] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)


def _builtin(name: str) -> Images:
    if name not in IMAGE_BUILTINS:
        known = ", ".join(BUILTIN_PREFIX + n for n in IMAGE_BUILTINS)
        raise FailJob(f"built-in dataset {BUILTIN_PREFIX + name!r} has no images; vision "
                         f"models train on {known} or an .npz file", code="unknown_dataset")
    table = load_builtin(name)
    side = math.isqrt(table.n_features)
    x = table.X.reshape(len(table.X), 1, side, side).astype(np.float32)
    return Images(x=x, y=table.y, class_names=table.class_names)


def to_nchw(x: npt.NDArray[Any], shown: str) -> npt.NDArray[np.float32]:
    """N x H x W, N x C x H x W or channels-last N x H x W x C -> float32 N x C x H x W."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in _CHANNELS and x.shape[1] not in _CHANNELS:
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in _CHANNELS:
        raise FailJob(f"{shown}: images must be N x H x W or N x C x H x W with C in 1, 3, 4; "
                         f"got shape {list(x.shape)}", code="invalid_data")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise FailJob(f"{shown}: image values must be real numbers, got dtype {x.dtype}",
                         code="invalid_data")
    out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(out).all():
        raise FailJob(f"{shown}: images contain NaN or infinite values", code="invalid_data")
    return out


def _read_npz(data_root: Path, shown: str) -> dict[str, npt.NDArray[Any]]:
    path = resolve_data_path(data_root, shown)
    if path.suffix.lower() != ".npz":
        raise FailJob(f"{shown}: vision models read .npz image arrays (x, y) or "
                         "builtin:digits", code="invalid_data")
    try:
        with (open_resolved(data_root, path, shown) as fh,
              np.load(fh, allow_pickle=False) as archive):
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FailJob(f"{shown}: not a readable .npz archive: {exc}",
                         code="invalid_data") from exc


def _labels(arrays: dict[str, npt.NDArray[Any]], n: int, shown: str) -> npt.NDArray[Any]:
    y = arrays.get("y", arrays.get("labels"))
    if y is None:
        raise FailJob(f"{shown}: no label array 'y' (found {sorted(arrays)})",
                         code="invalid_data")
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise FailJob(f"{shown}: {n} images but {len(y)} labels", code="invalid_data")
    if len(np.unique(y)) < 2:
        raise FailJob(f"{shown}: labels have {len(np.unique(y))} distinct value(s); "
                         "classification needs at least 2", code="invalid_data")
    return y


def load_images(data_root: Path, data_path: str, labelled: bool = True) -> Images:
    """``builtin:digits`` or an ``.npz`` file under the data root."""
    if data_path.startswith(BUILTIN_PREFIX):
        return _builtin(data_path.removeprefix(BUILTIN_PREFIX))
    arrays = _read_npz(data_root, data_path)
    raw = arrays.get("x", arrays.get("images"))
    if raw is None:
        raise FailJob(f"{data_path}: no image array 'x' (found {sorted(arrays)})",
                         code="invalid_data")
    x = to_nchw(raw, data_path)
    if len(x) == 0:
        raise FailJob(f"{data_path}: the image array is empty", code="invalid_data")
    y = _labels(arrays, len(x), data_path) if labelled else None
    return Images(x=x, y=y)


def _inline_image(row: list[Any], shape: tuple[int, int, int], r: int) -> npt.NDArray[Any]:
    try:
        arr = np.asarray(row, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise FailJob(f"inputs row {r}: not a rectangular array of numbers ({exc})",
                         code="invalid_inputs") from exc
    c, h, w = shape
    if arr.size == c * h * w and arr.ndim == 1:
        return arr.reshape(shape)  # a flat row, e.g. the 64 values of a digit
    candidates = {(h, w): arr[None] if arr.ndim == 2 else None,
                  (c, h, w): arr if arr.ndim == 3 else None,
                  (h, w, c): arr.transpose(2, 0, 1) if arr.ndim == 3 else None}
    image = candidates.get(tuple(arr.shape))
    if image is None or image.shape != shape:
        raise FailJob(f"inputs row {r}: shape {list(arr.shape)} does not fit the model's "
                         f"images {list(shape)} (or {c * h * w} flat values)",
                         code="invalid_inputs")
    return image


def inline_images(inputs: list[list[Any]], shape: tuple[int, int, int]) -> npt.NDArray[np.float32]:
    """Inline inference rows: each a nested H x W / C x H x W list or C*H*W flat numbers."""
    if not inputs:
        raise FailJob("inputs is empty; give at least one image", code="invalid_inputs")
    images = np.stack([_inline_image(row, shape, r) for r, row in enumerate(inputs)])
    return to_nchw(images, "inputs")
