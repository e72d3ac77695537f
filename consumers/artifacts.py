"""Model artifacts: ``<model_id>/{model.joblib,metadata.json}`` in the artifact store
(``consumers.artifact_store``), plus the small local-file helpers every framework uses.

Every file is written to a temporary name in the same directory and then ``os.replace``d (and
uploaded in one atomic PUT when the store is remote), so a reader (or a retried job after a
crash) never sees a half-written file. ``metadata.json`` is written last: its presence marks a
complete model.

The model file is a pickle: only load artifacts this deployment wrote itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from consumers.artifact_store import (
    METADATA_FILE,
    ArtifactStore,
    check_model_id,
    dumps,
    write_atomic,
)
from consumers.frameworks.base import FailJob

__all__ = ["METADATA_FILE", "MODEL_FILE", "ArtifactStore", "check_model_id", "load_model",
           "read_json", "save_model", "write_atomic", "write_json_atomic"]

MODEL_FILE = "model.joblib"


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON-encode ``data`` (numpy scalars and arrays included) and write it atomically."""
    payload = dumps(data)
    write_atomic(path, lambda fh: fh.write(payload))


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def save_model(store: ArtifactStore, model_id: str, model: Any,
               metadata: dict[str, Any]) -> Path:
    """Write ``model.joblib`` then ``metadata.json`` (with ``created_at``); the local dir."""
    import joblib

    store.write(model_id, MODEL_FILE, lambda fh: joblib.dump(model, fh))
    store.publish(model_id, {**metadata, "created_at": metadata.get("created_at", time.time()),
                             "files": [MODEL_FILE]})
    return store.local_dir(model_id)


def load_model(store: ArtifactStore, model_id: str) -> tuple[Any, dict[str, Any]]:
    """``(model, metadata)`` of a model saved by ``save_model``."""
    import joblib

    directory, meta = store.model(model_id, default_files=(MODEL_FILE,))
    path = directory / MODEL_FILE
    if not path.is_file():
        raise FailJob(f"model {model_id!r} not found: {MODEL_FILE} is missing",
                      code="model_not_found")
    try:
        model = joblib.load(path)
    except (OSError, EOFError, ValueError, ImportError, AttributeError) as exc:
        raise FailJob(f"model {model_id!r} could not be loaded: {exc}",
                      code="model_unreadable") from exc
    return model, meta
