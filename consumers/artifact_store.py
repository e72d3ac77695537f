"""The artifact store: models, metadata and checkpoints behind one fsspec URL (``ARTIFACT_URI``).

Every worker has a local directory (``ARTIFACT_ROOT``) laid out like the store,
``<model_id>/<file>``. Framework code writes and reads plain local files there; this module moves
them to and from the store:

* ``push`` uploads one local file; each upload is atomic (``file://``: a temp file beside the
  target, fsynced, then ``os.replace``; object stores: one PUT, or one completed multipart
  upload, is atomic per object).
* ``publish`` writes ``metadata.json`` last, locally and in the store: a model without it is not
  visible (``model`` refuses it), so a reader never sees a half-written model.
* ``model`` serves a model from the local directory when its ``metadata.json`` is there (the
  worker's cache: a hit does not touch the store) and otherwise downloads the files the metadata
  lists, then the metadata last, so a cached model is complete as well.
* ``pull`` / ``remove`` fetch or delete checkpoints (the store is authoritative for them: another
  worker may have written a newer one).

When the store *is* the local directory (the default: no ``ARTIFACT_URI``, or a ``file://`` URL
naming ``ARTIFACT_ROOT``) nothing is copied: ``push`` and ``pull`` only check, as before.

No key escapes the store's prefix: a model id is a job-id-like name and every path segment
after it a plain file name (no ``..``, no slashes, no absolute paths).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import orjson

from consumers.errors import FailJob

METADATA_FILE = "metadata.json"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")


class StoreError(Exception):
    """The artifact store cannot be used as configured; the message is the one line users read."""


def check_model_id(model_id: str) -> str:
    """``model_id`` when it can only name a directory right under the prefix."""
    if not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise FailJob(f"invalid model_id {model_id!r}: use the job id of a training job",
                      code="model_not_found")
    return model_id


def relative_key(model_id: str, name: str) -> str:
    """``<model_id>/<name>``, checked: ``name`` is plain file names joined by ``/``."""
    parts = name.split("/")
    if not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts):
        raise FailJob(f"invalid artifact name {name!r} for model {model_id!r}",
                      code="model_not_found")
    return "/".join((check_model_id(model_id), *parts))


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


def dumps(data: Any) -> bytes:
    """JSON of ``data`` (numpy scalars and arrays included), as every artifact's JSON is."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
                        default=str)


def _filesystem(uri: str, endpoint_url: str | None) -> tuple[Any, str]:
    """The fsspec filesystem and root path (no protocol, no trailing slash) of ``uri``."""
    import fsspec

    scheme = urlsplit(uri).scheme or "file"
    options: dict[str, Any] = {}
    if scheme in ("s3", "s3a"):
        # Listings cached by one worker would hide what another wrote since.
        options["use_listings_cache"] = False
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
    try:
        fs, root = fsspec.core.url_to_fs(uri, **options)
    except ImportError as exc:
        raise StoreError(f"ARTIFACT_URI={uri}: the {scheme} filesystem is not installed "
                         f"({exc}); for s3:// install the s3 extra (uv sync --extra s3, or "
                         "aiq env install <type>)") from None
    except ValueError as exc:
        raise StoreError(f"ARTIFACT_URI={uri}: {exc}") from None
    root = str(root).rstrip("/")
    if not root:
        raise StoreError(f"ARTIFACT_URI={uri}: name a bucket or directory")
    return fs, root


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


class ArtifactStore:
    """One worker's view of the store: ``local`` (its directory) mirrors ``uri``."""

    def __init__(self, local: Path, uri: str | None = None,
                 endpoint_url: str | None = None) -> None:
        self.local = Path(local)
        self.uri = uri or self.local.resolve().as_uri()
        self.fs, self.root = _filesystem(self.uri, endpoint_url)
        self.is_local = _is_local(self.fs)
        # The store is this very directory: nothing to copy either way.
        self.in_place = self.is_local and Path(self.root).resolve() == self.local.resolve()

    def __repr__(self) -> str:
        return f"ArtifactStore({self.uri!r}, local={str(self.local)!r})"

    # -- paths ---------------------------------------------------------------------------------

    def local_dir(self, model_id: str) -> Path:
        return self.local / check_model_id(model_id)

    def local_path(self, model_id: str, name: str) -> Path:
        return self.local / relative_key(model_id, name)

    def _key(self, model_id: str, name: str) -> str:
        return f"{self.root}/{relative_key(model_id, name)}"

    # -- writes ----------------------------------------------------------------------------------

    def push(self, model_id: str, name: str) -> None:
        """Upload the local file ``<model_id>/<name>`` to the store, atomically."""
        source = self.local_path(model_id, name)
        if self.in_place:
            return
        key = self._key(model_id, name)
        if self.is_local:
            target = Path(key)

            def copy(fh: IO[bytes]) -> None:
                with source.open("rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
            write_atomic(target, copy)
        else:
            self.fs.put_file(str(source), key)

    def push_tree(self, model_id: str, name: str) -> None:
        """``push`` every file under the local directory ``<model_id>/<name>``."""
        base = self.local_path(model_id, name)
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            self.push(model_id, f"{name}/{path.relative_to(base).as_posix()}")

    def write(self, model_id: str, name: str, write: Callable[[IO[bytes]], object]) -> Path:
        """Write the local file ``<model_id>/<name>`` atomically and push it; its local path."""
        path = self.local_path(model_id, name)
        write_atomic(path, write)
        self.push(model_id, name)
        return path

    def write_json(self, model_id: str, name: str, data: Any) -> Path:
        payload = dumps(data)
        return self.write(model_id, name, lambda fh: fh.write(payload))

    def publish(self, model_id: str, metadata: dict[str, Any]) -> Path:
        """Write ``metadata.json`` last: from now on the model is visible everywhere. Call it
        after every file the metadata's ``files`` lists has been pushed."""
        return self.write_json(model_id, METADATA_FILE, metadata)

    # -- reads -----------------------------------------------------------------------------------

    def metadata(self, model_id: str) -> dict[str, Any]:
        """The model's metadata, from the cache when it is there (then the model is complete
        locally) or else from the store; ``model_not_found`` when it is in neither."""
        cached = self.local_dir(model_id) / METADATA_FILE
        try:
            raw = cached.read_bytes()
        except FileNotFoundError:
            if self.in_place:
                raise _not_found(model_id) from None
            raw = self._cat(model_id, METADATA_FILE)
        return _parse_metadata(model_id, raw)

    def model(self, model_id: str, default_files: tuple[str, ...] = ()
              ) -> tuple[Path, dict[str, Any]]:
        """``(local directory, metadata)`` of the complete model ``model_id``: a cache hit,
        without touching the store, when its ``metadata.json`` is in the local directory;
        else the files its metadata lists (``default_files`` when it lists none) are
        downloaded, then the metadata, last."""
        directory = self.local_dir(model_id)
        if self.in_place or (directory / METADATA_FILE).is_file():
            return directory, self.metadata(model_id)
        raw = self._cat(model_id, METADATA_FILE)
        meta = _parse_metadata(model_id, raw)
        for name in _listed_files(meta, default_files):
            if not self.pull(model_id, name):
                raise FailJob(f"model {model_id!r} not found: {name} is missing from the "
                              "artifact store", code="model_not_found")
        write_atomic(directory / METADATA_FILE, lambda fh: fh.write(raw))  # the cache entry
        return directory, meta

    def pull(self, model_id: str, name: str) -> bool:
        """Download ``<model_id>/<name>`` from the store into the local directory (replacing a
        local copy atomically); False when the store has no such file."""
        path = self.local_path(model_id, name)
        if self.in_place:
            return path.is_file()
        key = self._key(model_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            self.fs.get_file(key, str(tmp))
            os.replace(tmp, path)
        except FileNotFoundError:
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True

    def pull_tree(self, model_id: str, name: str) -> bool:
        """``pull`` every file under ``<model_id>/<name>``; False when there is none."""
        if self.in_place:
            return self.local_path(model_id, name).is_dir()
        prefix = self._key(model_id, name)
        try:
            found = self.fs.find(prefix, detail=True)
        except FileNotFoundError:
            found = {}
        names = [f"{name}/{str(k).removeprefix(prefix + '/')}" for k, info in sorted(
            found.items()) if str(k).startswith(prefix + "/") and info.get("type") == "file"]
        return bool(names) and all(self.pull(model_id, n) for n in names)

    def read_json(self, model_id: str, name: str) -> Any:
        """A JSON file of the store (checkpoint state); ``FileNotFoundError`` when missing."""
        path = self.local_path(model_id, name)
        raw = path.read_bytes() if self.in_place else self._cat_raw(self._key(model_id, name))
        return orjson.loads(raw)

    def _cat(self, model_id: str, name: str) -> bytes:
        try:
            return self._cat_raw(self._key(model_id, name))
        except FileNotFoundError:
            raise _not_found(model_id) from None

    def _cat_raw(self, key: str) -> bytes:
        data = self.fs.cat_file(key)
        return bytes(data)

    # -- deletes ---------------------------------------------------------------------------------

    def remove(self, model_id: str, name: str) -> None:
        """Delete the file or directory ``<model_id>/<name>``, locally and in the store."""
        path = self.local_path(model_id, name)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self.in_place:
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._key(model_id, name), recursive=True)


class StoreSettings(Protocol):
    artifact_root: Path
    artifact_uri: str | None
    artifact_s3_endpoint_url: str | None


def open_store(settings: StoreSettings) -> ArtifactStore:
    """The store a worker's settings name (``StoreError`` when they name none it can use)."""
    return ArtifactStore(settings.artifact_root, settings.artifact_uri,
                         settings.artifact_s3_endpoint_url)


def _not_found(model_id: str) -> FailJob:
    return FailJob(f"model {model_id!r} not found (no trained model with that id)",
                   code="model_not_found")


def _parse_metadata(model_id: str, raw: bytes) -> dict[str, Any]:
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FailJob(f"model {model_id!r}: metadata is unreadable: {exc}",
                      code="model_unreadable") from exc
    if not isinstance(meta, dict):
        raise FailJob(f"model {model_id!r}: metadata is not an object", code="model_unreadable")
    return meta


def _listed_files(meta: dict[str, Any], default: tuple[str, ...]) -> list[str]:
    files = meta.get("files", list(default))
    if not files or not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise FailJob(f"model {meta.get('model_id')!r}: its metadata lists no files",
                      code="model_unreadable")
    return files


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file of a job in the store and its local copy, e.g. a training checkpoint."""

    store: ArtifactStore
    model_id: str
    name: str

    @property
    def path(self) -> Path:
        return self.store.local_path(self.model_id, self.name)

    def save(self, write: Callable[[IO[bytes]], object]) -> None:
        """Write it locally and to the store, atomically both."""
        self.store.write(self.model_id, self.name, write)

    def fetch(self) -> Path | None:
        """Its local path, freshly downloaded from the store (which another worker may have
        written since); None when the store has none."""
        return self.path if self.store.pull(self.model_id, self.name) else None

    def delete(self) -> None:
        self.store.remove(self.model_id, self.name)
