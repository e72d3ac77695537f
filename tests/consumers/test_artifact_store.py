"""The artifact store (consumers/artifact_store.py) on both backends it is deployed with: a
``file://`` directory and a real S3 (SeaweedFS started by the session, ``s3_server``).

Each test plays several workers: stores with the same URL and each its own empty local
directory, so nothing passes between them but the store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from consumers.artifact_store import (
    METADATA_FILE,
    ArtifactStore,
    StoredFile,
    StoreError,
)
from consumers.errors import FailJob
from consumers.settings import WorkerSettings
from consumers.startup import StartupError, check_store


@dataclass
class Backend:
    """One store URL and a factory of workers' views of it (each with its own local dir)."""

    uri: str
    endpoint_url: str | None
    root: Path
    remove: Callable[[str], None]  # delete a key (relative to the URL) in the store itself
    listing: Callable[[], list[str]]  # every key in the store, relative to the URL

    def worker(self, name: str) -> ArtifactStore:
        local = self.root / name
        local.mkdir()
        return ArtifactStore(local, self.uri, self.endpoint_url)


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "file":
        store = tmp_path / "store"
        store.mkdir()

        def remove_file(key: str) -> None:
            (store / key).unlink()

        def list_files() -> list[str]:
            return sorted(p.relative_to(store).as_posix() for p in store.rglob("*")
                          if p.is_file())
        return Backend(store.as_uri(), None, tmp_path, remove_file, list_files)
    s3 = request.getfixturevalue("s3_server")
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    fs, base = s3.filesystem(), f"aiq-artifacts/{prefix}"

    def remove_key(key: str) -> None:
        fs.rm_file(f"{base}/{key}")

    def list_keys() -> list[str]:
        found = fs.find(base, detail=True)  # SeaweedFS may list an emptied prefix as a dir
        return sorted(str(k).removeprefix(base + "/") for k, info in found.items()
                      if info["type"] == "file")
    return Backend(s3.uri(prefix), s3.endpoint_url, tmp_path, remove_key, list_keys)


def _text(data: bytes) -> Callable[[IO[bytes]], object]:
    return lambda fh: fh.write(data)


def _model_id() -> str:
    return f"job_{uuid.uuid4()}"


def test_a_model_is_read_by_another_worker(backend: Backend) -> None:
    a, b = backend.worker("a"), backend.worker("b")
    model_id = _model_id()
    a.write(model_id, "model.bin", _text(b"weights"))
    a.publish(model_id, {"framework": "test", "files": ["model.bin"]})
    assert backend.listing() == [f"{model_id}/{METADATA_FILE}", f"{model_id}/model.bin"]
    directory, meta = b.model(model_id)
    assert directory == b.local / model_id
    assert (directory / "model.bin").read_bytes() == b"weights"
    assert meta == {"framework": "test", "files": ["model.bin"]}
    assert b.metadata(model_id) == meta


def test_a_model_without_metadata_is_not_visible(backend: Backend) -> None:
    """Files first, metadata last: until ``publish`` the model does not exist for anyone."""
    a, b = backend.worker("a"), backend.worker("b")
    model_id = _model_id()
    a.write(model_id, "model.bin", _text(b"weights"))
    for read in (b.model, b.metadata):
        with pytest.raises(FailJob) as info:
            read(model_id)
        assert info.value.code == "model_not_found"
    assert not (b.local / model_id).exists()  # nothing half-cached
    a.publish(model_id, {"files": ["model.bin"]})
    assert (b.model(model_id)[0] / "model.bin").read_bytes() == b"weights"


def test_a_failed_write_leaves_nothing(backend: Backend) -> None:
    """A writer that dies half-way (here: raises) uploads nothing and leaves no temp file."""
    a = backend.worker("a")
    model_id = _model_id()

    def half(fh: IO[bytes]) -> None:
        fh.write(b"half a model")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        a.write(model_id, "model.bin", half)
    assert backend.listing() == []
    assert list((a.local / model_id).iterdir()) == []


def test_a_listed_file_missing_from_the_store_is_not_found(backend: Backend) -> None:
    a, b = backend.worker("a"), backend.worker("b")
    model_id = _model_id()
    a.publish(model_id, {"files": ["model.bin"]})  # a file it never pushed
    with pytest.raises(FailJob, match=r"model\.bin is missing") as info:
        b.model(model_id)
    assert info.value.code == "model_not_found"
    assert not (b.local / model_id / METADATA_FILE).exists()  # no cache entry for it


@pytest.mark.parametrize("model_id", ["../x", "..", "a/b", "/etc", "", ".hidden", "a" * 200,
                                      "x\\..\\y", "job_1/../../etc"])
def test_model_ids_that_could_escape_the_prefix_are_refused(backend: Backend,
                                                            model_id: str) -> None:
    a = backend.worker("a")
    for call in (lambda: a.model(model_id), lambda: a.metadata(model_id),
                 lambda: a.write(model_id, "f", _text(b"x")), lambda: a.publish(model_id, {}),
                 lambda: a.remove(model_id, "f"), lambda: a.pull(model_id, "f")):
        with pytest.raises(FailJob) as info:
            call()
        assert info.value.code == "model_not_found"
    assert backend.listing() == []
    assert sorted(p.name for p in backend.root.iterdir()) == sorted(
        ["a", *(["store"] if backend.uri.startswith("file:") else [])])


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/abs", "", "a//b", "./a", "a/.."])
def test_file_names_that_could_escape_the_prefix_are_refused(backend: Backend,
                                                             name: str) -> None:
    a = backend.worker("a")
    with pytest.raises(FailJob):
        a.write(_model_id(), name, _text(b"x"))
    with pytest.raises(FailJob):
        a.pull(_model_id(), name)
    assert backend.listing() == []


def test_a_cached_model_is_served_without_the_store(backend: Backend) -> None:
    """A worker caches what it read, keyed by model id: once cached, the model is served from
    its local dir even after the store lost it; a worker without it in cache cannot."""
    a, b, c = backend.worker("a"), backend.worker("b"), backend.worker("c")
    model_id = _model_id()
    a.write(model_id, "model.bin", _text(b"weights"))
    a.publish(model_id, {"files": ["model.bin"]})
    b.model(model_id)  # the first read fills b's cache
    for key in backend.listing():
        backend.remove(key)
    directory, meta = b.model(model_id)
    assert (directory / "model.bin").read_bytes() == b"weights" and meta["files"]
    with pytest.raises(FailJob) as info:
        c.model(model_id)
    assert info.value.code == "model_not_found"


def test_checkpoints_save_load_and_delete(backend: Backend) -> None:
    """A checkpoint written by one worker is loaded by another, always fresh from the store
    (a stale local copy is replaced), and deleted everywhere."""
    a, b = backend.worker("a"), backend.worker("b")
    job_id = _model_id()
    on_a, on_b = StoredFile(a, job_id, "checkpoint.pt"), StoredFile(b, job_id, "checkpoint.pt")
    assert on_b.fetch() is None
    on_a.save(_text(b"epoch 1"))
    path = on_b.fetch()
    assert path == b.local / job_id / "checkpoint.pt" and path.read_bytes() == b"epoch 1"
    on_a.save(_text(b"epoch 2"))
    assert on_b.fetch() is not None and path.read_bytes() == b"epoch 2"
    on_b.delete()
    assert on_a.fetch() is None and backend.listing() == [] and not path.exists()


def test_checkpoint_directories_round_trip(backend: Backend) -> None:
    """A checkpoint that is a directory (TensorFlow's) with a JSON pointer written last."""
    a, b = backend.worker("a"), backend.worker("b")
    job_id = _model_id()
    tree = a.local_path(job_id, "checkpoint/epoch-0001")
    (tree / "sub").mkdir(parents=True)
    (tree / "ckpt.index").write_bytes(b"index")
    (tree / "sub" / "ckpt.data").write_bytes(b"data")
    a.push_tree(job_id, "checkpoint/epoch-0001")
    a.write_json(job_id, "checkpoint/latest.json", {"dir": "epoch-0001"})
    assert b.read_json(job_id, "checkpoint/latest.json") == {"dir": "epoch-0001"}
    assert b.pull_tree(job_id, "checkpoint/epoch-0001")
    got = b.local_path(job_id, "checkpoint/epoch-0001")
    assert (got / "ckpt.index").read_bytes() == b"index"
    assert (got / "sub" / "ckpt.data").read_bytes() == b"data"
    assert not b.pull_tree(job_id, "checkpoint/epoch-0002")
    a.remove(job_id, "checkpoint")
    assert backend.listing() == [] and not tree.exists()
    with pytest.raises(FileNotFoundError):
        b.read_json(job_id, "checkpoint/latest.json")


def test_the_default_store_is_the_local_directory(tmp_path: Path) -> None:
    """No ARTIFACT_URI: ARTIFACT_ROOT is the store, read and written in place (no copies)."""
    store = ArtifactStore(tmp_path)
    assert store.in_place and store.uri == tmp_path.resolve().as_uri()
    model_id = _model_id()
    store.write(model_id, "model.bin", _text(b"w"))
    store.publish(model_id, {"files": ["model.bin"]})
    assert sorted(p.name for p in (tmp_path / model_id).iterdir()) == [METADATA_FILE,
                                                                        "model.bin"]
    assert store.model(model_id)[0] == tmp_path / model_id
    same = ArtifactStore(tmp_path, tmp_path.as_uri())  # a file:// URL naming the same dir
    assert same.in_place


def _settings(tmp_path: Path, **values: Any) -> WorkerSettings:
    return WorkerSettings(worker_type="sklearn", model_framework="sklearn",
                          artifact_root=tmp_path, **values)


@pytest.mark.parametrize(("uri", "says"), [
    ("nosuchfs://bucket/x", "nosuchfs"),
    ("s3://", "name a bucket"),
])
def test_a_store_url_that_cannot_work_stops_the_worker_at_start(tmp_path: Path, uri: str,
                                                                 says: str) -> None:
    with pytest.raises(StoreError, match=says):
        ArtifactStore(tmp_path, uri)
    with pytest.raises(StartupError, match=f"ARTIFACT_URI={uri}"):
        check_store(_settings(tmp_path, artifact_uri=uri))


def test_settings_read_the_store_from_the_environment(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACT_URI", "s3://bucket/models")
    monkeypatch.setenv("ARTIFACT_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    settings = _settings(tmp_path)
    assert settings.artifact_uri == "s3://bucket/models"
    store = check_store(settings)  # no I/O: nothing listens on port 1
    assert store.root == "bucket/models" and not store.is_local
    assert store.fs.endpoint_url == "http://127.0.0.1:1"
