"""Model artifacts on disk: ``<artifact_root>/<model_id>/{model.joblib,metadata.json}``.

Every file is written to a temporary name in the same directory and then ``os.replace``d, so a
reader (or a retried job after a crash) never sees a half-written file. ``metadata.json`` is
written last: its presence marks a complete model.

The model file is a pickle: only load artifacts this deployment wrote itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from consumers.frameworks.base import FailJob

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through ``write`` into a temp file beside ``path``, fsync, then replace ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON-encode ``data`` (numpy scalars and arrays included) and write it atomically."""
    payload = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
                           default=str)
    write_atomic(path, lambda fh: fh.write(payload))


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def model_dir(artifact_root: Path, model_id: str) -> Path:
    """The directory of ``model_id``; refuses ids that could name anything outside the root."""
    if not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise FailJob(f"invalid model_id {model_id!r}: use the job id of a training job",
                         code="model_not_found")
    return artifact_root / model_id


def save_model(artifact_dir: Path, model: Any, metadata: dict[str, Any]) -> Path:
    """Write ``model.joblib`` then ``metadata.json`` (with ``created_at``); returns the dir."""
    import joblib

    write_atomic(artifact_dir / MODEL_FILE, lambda fh: joblib.dump(model, fh))
    meta = {**metadata, "created_at": metadata.get("created_at", time.time())}
    write_json_atomic(artifact_dir / METADATA_FILE, meta)
    return artifact_dir


def load_metadata(artifact_root: Path, model_id: str) -> dict[str, Any]:
    path = model_dir(artifact_root, model_id) / METADATA_FILE
    try:
        meta = read_json(path)
    except FileNotFoundError:
        raise FailJob(f"model {model_id!r} not found (no trained model with that id)",
                         code="model_not_found") from None
    except orjson.JSONDecodeError as exc:
        raise FailJob(f"model {model_id!r}: metadata is unreadable: {exc}",
                         code="model_unreadable") from exc
    if not isinstance(meta, dict):
        raise FailJob(f"model {model_id!r}: metadata is not an object", code="model_unreadable")
    return meta


def load_model(artifact_root: Path, model_id: str) -> tuple[Any, dict[str, Any]]:
    """``(model, metadata)`` of a model saved by ``save_model``."""
    import joblib

    meta = load_metadata(artifact_root, model_id)
    path = model_dir(artifact_root, model_id) / MODEL_FILE
    if not path.is_file():
        raise FailJob(f"model {model_id!r} not found: {MODEL_FILE} is missing",
                         code="model_not_found")
    try:
        model = joblib.load(path)
    except (OSError, EOFError, ValueError, ImportError, AttributeError) as exc:
        raise FailJob(f"model {model_id!r} could not be loaded: {exc}",
                         code="model_unreadable") from exc
    return model, meta
