"""Data loading for worker processes: safe path resolution and opening, built-in datasets, CSV
tables.

Every problem with a job's data is a ``FailJob`` (not retried) whose message names the
file, line and column, so the user can fix the input without reading worker logs.
"""

from __future__ import annotations

import csv
import errno
import io
import math
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from consumers.frameworks.base import FailJob
from consumers.paths import resolve_under_root
from consumers.paths import why as _why

BUILTIN_PREFIX = "builtin:"
PROC_SELF_FD = "/proc/self/fd"  # where Linux says which file a descriptor is; tests blank it
LABEL_CANDIDATES = ("label", "target")


def _builtin_loaders() -> dict[str, Callable[[], Any]]:
    from sklearn import datasets  # the sklearn extra is only installed on sklearn-capable types

    return {
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }


BUILTIN_DATASETS = ("breast_cancer", "digits", "iris", "wine")


@dataclass(frozen=True, slots=True)
class Tabular:
    """A labelled table: float features, labels as given (ints when they all parse as ints)."""

    X: npt.NDArray[np.float64]
    y: npt.NDArray[Any]
    feature_names: list[str]
    label_name: str
    class_names: list[str] | None = None

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def resolve_data_path(data_root: Path, data_path: str) -> Path:
    """Resolve ``data_path`` (relative to ``data_root``, or absolute inside it) to a file.

    Symlinks and ``..`` are resolved first, so nothing can point outside the root."""
    if not data_path or not data_path.strip():
        raise FailJob("data_path is empty", code="data_path_required")
    resolved = resolve_under_root(data_root, data_path, "data_path")
    if not resolved.is_file():
        what = "is not a file" if resolved.exists() else "was not found"
        raise FailJob(f"data file {data_path!r} {what} under the data root",
                         code="data_not_found")
    return resolved


def _outside(data_path: str, why: str) -> FailJob:
    return FailJob(f"data_path {data_path!r} {why}; it was not read",
                   code="data_path_outside_root")


def _under_root_stat(root: Path, resolved: Path) -> os.stat_result:
    """``resolved``'s stat, reached from ``root`` one directory at a time without following a
    symlink (``dir_fd`` + ``O_NOFOLLOW``): what the path names inside the root right now."""
    *dirs, name = resolved.relative_to(root).parts
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in dirs:
            next_fd = os.open(part, flags, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(dir_fd)


def _opened_path(fd: int) -> Path | None:
    """The path the kernel has for ``fd`` (Linux ``/proc``); None where /proc is missing."""
    try:
        return Path(os.readlink(f"{PROC_SELF_FD}/{fd}"))
    except OSError:
        return None


def _check_opened(fd: int, root: Path, resolved: Path, data_path: str) -> None:
    """Refuse what ``fd`` holds unless it is a regular file inside ``root``: a symlink swapped
    in after ``resolve_data_path`` (for the file, or a directory on the way) is caught here."""
    opened = _opened_path(fd)
    if opened is not None:
        if not opened.is_relative_to(root):
            raise _outside(data_path, "led outside the data root when it was opened (a "
                           "symlink was swapped in after the check)")
    else:  # no /proc: the file opened must be the one the path names under the root now
        try:
            here = _under_root_stat(root, resolved)
        except (OSError, ValueError):
            raise _outside(data_path, "no longer leads to a file inside the data root (a "
                           "symlink was swapped in after the check)") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (here.st_dev, here.st_ino):
            raise _outside(data_path, "changed between the check and the open")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise FailJob(f"data file {data_path!r} is not a file under the data root",
                      code="data_not_found")


def open_resolved(data_root: Path, resolved: Path, data_path: str) -> BinaryIO:
    """Open ``resolved`` (``resolve_data_path``'s answer for ``data_path``) for binary reading
    and check what was opened: a regular file inside the data root, whatever was swapped in
    since the path was resolved. Messages name ``data_path`` only."""
    root = data_root.resolve()
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO cannot block
    try:
        fd = os.open(resolved, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the file itself was swapped for a symlink
            raise _outside(data_path, "became a symlink after it was checked") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FailJob(f"data file {data_path!r} was not found under the data root",
                          code="data_not_found") from None
        raise FailJob(f"data file {data_path!r} could not be opened: {_why(exc)}",
                      code="invalid_data_path") from None
    try:
        _check_opened(fd, root, resolved, data_path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def open_data(data_root: Path, data_path: str) -> Iterator[BinaryIO]:
    """``data_path`` under the data root, resolved and opened safely (see ``open_resolved``);
    closed on leaving the block."""
    with open_resolved(data_root, resolve_data_path(data_root, data_path), data_path) as fh:
        yield fh


def load_builtin(name: str) -> Tabular:
    """One of scikit-learn's bundled datasets (no download)."""
    loaders = _builtin_loaders()
    if name not in loaders:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
        raise FailJob(f"unknown built-in dataset {BUILTIN_PREFIX + name!r}; known: {known}",
                         code="unknown_dataset")
    bunch = loaders[name]()
    features = [str(f) for f in getattr(bunch, "feature_names", [])]
    if not features:
        features = [f"x{i}" for i in range(bunch.data.shape[1])]
    return Tabular(X=np.asarray(bunch.data, dtype=np.float64), y=np.asarray(bunch.target),
                   feature_names=features, label_name="target",
                   class_names=[str(c) for c in bunch.target_names])


def read_csv(raw: BinaryIO, shown: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, cells)`` rows of an open binary file (left open); blank lines
    skipped, ragged rows refused."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text)
        header = next(reader, None)
        rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FailJob(f"{shown}: not a readable UTF-8 CSV file: {exc}",
                         code="invalid_data") from exc
    finally:
        text.detach()  # the caller closes ``raw``
    if header is None or not any(c.strip() for c in header):
        raise FailJob(f"{shown}: the file is empty (expected a header row and data rows)",
                         code="invalid_data")
    header = [c.strip() for c in header]
    if not rows:
        raise FailJob(f"{shown}: no data rows after the header", code="invalid_data")
    for line, row in rows:
        if len(row) != len(header):
            raise FailJob(f"{shown} line {line}: {len(row)} values but the header has "
                             f"{len(header)} columns", code="invalid_data")
    return header, rows


def _to_float(value: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FailJob(f"{where}: non-numeric value {value.strip()[:40]!r}; features must be "
                         "numbers", code="invalid_data") from None
    if not math.isfinite(number):
        raise FailJob(f"{where}: value {value.strip()!r} is not a finite number",
                         code="invalid_data")
    return number


def _float_matrix(rows: Sequence[tuple[int, list[str]]], columns: Sequence[tuple[int, str]],
                  shown: str) -> npt.NDArray[np.float64]:
    """Pick ``columns`` (index, name) of every row as floats, naming the first bad cell."""
    out = np.empty((len(rows), len(columns)), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        for c, (index, name) in enumerate(columns):
            out[r, c] = _to_float(row[index], f"{shown} line {line}, column {name!r}")
    return out


def _labels(values: list[str]) -> npt.NDArray[Any]:
    try:
        return np.asarray([int(v) for v in values])
    except ValueError:
        return np.asarray(values)


def find_label_column(header: list[str], label_column: str | None, shown: str) -> int | None:
    """Index of the label column: the one named, else ``label``/``target``; None if absent."""
    if label_column is not None:
        if label_column not in header:
            raise FailJob(f"{shown}: label column {label_column!r} not in the header "
                             f"{header}", code="invalid_data")
        return header.index(label_column)
    for name in LABEL_CANDIDATES:
        if name in header:
            return header.index(name)
    return None


def _label_index(header: list[str], label_column: str | None, shown: str) -> int:
    found = find_label_column(header, label_column, shown)
    return len(header) - 1 if found is None else found  # tabular: the last column


def _check_classes(y: npt.NDArray[Any], label: str, shown: str) -> None:
    classes = np.unique(y)
    if len(classes) < 2:
        raise FailJob(f"{shown}: label column {label!r} has {len(classes)} distinct value(s) "
                         f"{classes.tolist()}; classification needs at least 2 classes",
                         code="invalid_data")


def load_tabular(data_root: Path, data_path: str, label_column: str | None = None) -> Tabular:
    """A built-in dataset (``builtin:<name>``) or a CSV file with a header row under the root."""
    if data_path.startswith(BUILTIN_PREFIX):
        return load_builtin(data_path.removeprefix(BUILTIN_PREFIX))
    with open_data(data_root, data_path) as fh:
        header, rows = read_csv(fh, data_path)
    if len(header) < 2:
        raise FailJob(f"{data_path}: need at least one feature column and a label column, "
                         f"got header {header}", code="invalid_data")
    li = _label_index(header, label_column, data_path)
    for line, row in rows:
        if not row[li].strip():
            raise FailJob(f"{data_path} line {line}: empty label in column {header[li]!r}",
                             code="invalid_data")
    features = [(i, name) for i, name in enumerate(header) if i != li]
    X = _float_matrix(rows, features, data_path)
    y = _labels([row[li].strip() for _, row in rows])
    _check_classes(y, header[li], data_path)
    return Tabular(X=X, y=y, feature_names=[n for _, n in features], label_name=header[li])


def _inline_matrix(inputs: list[list[Any]]) -> npt.NDArray[np.float64]:
    if not inputs:
        raise FailJob("inputs is empty; give at least one row", code="invalid_inputs")
    width = len(inputs[0])
    out = np.empty((len(inputs), width), dtype=np.float64)
    for r, row in enumerate(inputs):
        if len(row) != width:
            raise FailJob(f"inputs row {r}: {len(row)} values but row 0 has {width}",
                             code="invalid_inputs")
        for c, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise FailJob(f"inputs row {r}, column {c}: {value!r} is not a number",
                                 code="invalid_inputs")
            out[r, c] = _to_float(str(value), f"inputs row {r}, column {c}")
    return out


def _csv_inputs(data_root: Path, data_path: str, feature_names: Sequence[str],
                label_name: str | None) -> npt.NDArray[np.float64]:
    """CSV rows for inference: by feature name when the header has them all, else every column
    except the training label column."""
    with open_data(data_root, data_path) as fh:
        header, rows = read_csv(fh, data_path)
    if feature_names and set(feature_names) <= set(header):
        columns = [(header.index(n), n) for n in feature_names]
    else:
        columns = [(i, n) for i, n in enumerate(header) if n != label_name]
    return _float_matrix(rows, columns, data_path)


def load_inputs(data_root: Path, inputs_or_path: list[list[Any]] | str, *, n_features: int,
                feature_names: Sequence[str] = (),
                label_name: str | None = None) -> npt.NDArray[np.float64]:
    """Inference inputs (inline rows, a CSV path or ``builtin:<name>``) as a 2-D float array with
    exactly ``n_features`` columns."""
    if isinstance(inputs_or_path, str):
        if inputs_or_path.startswith(BUILTIN_PREFIX):
            X = load_builtin(inputs_or_path.removeprefix(BUILTIN_PREFIX)).X
        else:
            X = _csv_inputs(data_root, inputs_or_path, feature_names, label_name)
    else:
        X = _inline_matrix(inputs_or_path)
    if X.shape[1] != n_features:
        raise FailJob(f"inputs have {X.shape[1]} columns but the model expects {n_features} "
                         "features", code="invalid_inputs")
    return X
