"""Opening a job's data file safely (issue #10): a symlink swapped in after ``resolve_data_path``
checked the path (for the file itself, or for a directory on the way) must not let the worker
read a file outside the data root. Each race is reproduced deterministically: resolve, swap,
then open, with real files in a tmp dir."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consumers import data, textdata
from consumers.data import load_inputs, load_tabular, open_data, read_csv, resolve_data_path
from consumers.frameworks.base import FailJob
from consumers.frameworks.tensorflow import data as tf_data
from consumers.frameworks.tensorflow.spec import parse_spec

INSIDE = "a,label\n1,0\n2,1\n"
SECRET = "a,label\n99,7\n98,8\n"  # what must never be read through a job's data_path
SPEC = parse_spec("mobilenet", {})


@pytest.fixture(params=["proc", "no_proc"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
         tmp_path: Path) -> str:
    """Each race with Linux's /proc/self/fd check, and with the check used where /proc is
    missing (the opened file compared with what the path names under the root now)."""
    if request.param == "no_proc":
        monkeypatch.setattr(data, "PROC_SELF_FD", str(tmp_path / "no-proc"))
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``data/a.csv``, ``data/sub/a.csv`` inside the root; ``outside/a.csv``,
    ``outside/secret.csv`` and ``outside/secret.npz`` next to it."""
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "data" / "a.csv").write_text(INSIDE)
    (tmp_path / "data" / "sub" / "a.csv").write_text(INSIDE)
    (tmp_path / "outside" / "a.csv").write_text(SECRET)
    (tmp_path / "outside" / "secret.csv").write_text(SECRET)
    np.savez(tmp_path / "outside" / "secret.npz", x=np.ones((4, 8, 8)), y=np.arange(4) % 2)
    return tmp_path


def _swap_file(tree: Path, name: str = "a.csv") -> None:
    """The checked file becomes a symlink to a file of its type outside the root."""
    (tree / "data" / name).unlink()
    os.symlink(tree / "outside" / f"secret{Path(name).suffix}", tree / "data" / name)


def _swap_dir(tree: Path) -> None:
    """The checked directory ``sub`` becomes a symlink to an outside one holding ``a.csv``."""
    shutil.rmtree(tree / "data" / "sub")
    os.symlink(tree / "outside", tree / "data" / "sub")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _refused(tree: Path, data_path: str, load: Callable[[], Any]) -> FailJob:
    fds = _open_fds()
    with pytest.raises(FailJob) as info:
        load()
    assert info.value.code == "data_path_outside_root"
    message = str(info.value)
    assert repr(data_path) in message and str(tree) not in message  # no server path
    assert _open_fds() == fds  # the descriptor was closed
    return info.value


def _read(data_path: str, root: Path, resolved: Path) -> list[str]:
    with data.open_resolved(root, resolved, data_path) as fh:
        return read_csv(fh, data_path)[1][0][1]


# --- the races, at the helper --------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds through /proc")
def test_file_swapped_for_outside_symlink_after_resolve(tree: Path, mode: str) -> None:
    root = tree / "data"
    resolved = resolve_data_path(root, "a.csv")
    _swap_file(tree)
    _refused(tree, "a.csv", lambda: _read("a.csv", root, resolved))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds through /proc")
def test_directory_swapped_for_outside_symlink_after_resolve(tree: Path, mode: str) -> None:
    root = tree / "data"
    resolved = resolve_data_path(root, "sub/a.csv")
    _swap_dir(tree)
    error = _refused(tree, "sub/a.csv", lambda: _read("sub/a.csv", root, resolved))
    assert "symlink" in str(error)


def test_fifo_swapped_in_is_refused_without_blocking(tree: Path, mode: str) -> None:
    root = tree / "data"
    resolved = resolve_data_path(root, "a.csv")
    (root / "a.csv").unlink()
    os.mkfifo(root / "a.csv")  # opening it for reading would block without O_NONBLOCK
    with pytest.raises(FailJob, match=r"'a.csv' is not a file") as info:
        _read("a.csv", root, resolved)
    assert info.value.code == "data_not_found"


def test_file_removed_after_resolve(tree: Path, mode: str) -> None:
    root = tree / "data"
    resolved = resolve_data_path(root, "sub/a.csv")
    (root / "sub" / "a.csv").unlink()
    with pytest.raises(FailJob, match="not found") as info:
        _read("sub/a.csv", root, resolved)
    assert info.value.code == "data_not_found" and str(tree) not in str(info.value)


# --- the races, through every loader -------------------------------------------------------------

@pytest.fixture
def swap_after_resolve(monkeypatch: pytest.MonkeyPatch, tree: Path) -> Callable[[str], None]:
    """Make each loader's own ``resolve_data_path`` call swap the checked path afterwards:
    ``"file"`` (data/a.csv, data/a.npz) or ``"dir"`` (data/sub)."""

    def arm(what: str) -> None:
        real = resolve_data_path

        def resolve_then_swap(root: Path, data_path: str) -> Path:
            resolved = real(root, data_path)
            if what == "dir":
                _swap_dir(tree)
            else:
                _swap_file(tree, Path(data_path).name)
            return resolved

        monkeypatch.setattr(data, "resolve_data_path", resolve_then_swap)
        monkeypatch.setattr(tf_data, "resolve_data_path", resolve_then_swap)

    return arm


@pytest.mark.parametrize("what", ["file", "dir"])
@pytest.mark.parametrize("loader", ["tabular", "inputs", "text"])
def test_csv_loaders_refuse_a_swap(tree: Path, mode: str, swap_after_resolve: Any,
                                   what: str, loader: str) -> None:
    root, data_path = tree / "data", "a.csv" if what == "file" else "sub/a.csv"
    (tree / "outside" / "secret.csv").write_text("text,label\nthe secret,7\n")
    (tree / "outside" / "a.csv").write_text("text,label\nthe secret,7\n")
    loaders = {"tabular": lambda: load_tabular(root, data_path),
               "inputs": lambda: load_inputs(root, data_path, n_features=1),
               "text": lambda: textdata.load_text(root, data_path, labelled=False)}
    swap_after_resolve(what)
    _refused(tree, data_path, loaders[loader])


@pytest.mark.parametrize("what", ["file", "dir"])
def test_tensorflow_npz_loaders_refuse_a_swap(tree: Path, mode: str, swap_after_resolve: Any,
                                              what: str) -> None:
    root, data_path = tree / "data", "a.npz" if what == "file" else "sub/a.npz"
    np.savez(root / data_path, x=np.zeros((4, 8, 8)), y=np.arange(4) % 2)
    np.savez(tree / "outside" / "a.npz", x=np.ones((4, 8, 8)), y=np.arange(4) % 2)
    swap_after_resolve(what)
    _refused(tree, data_path, lambda: tf_data.load_images(root, data_path, SPEC))
    _refused(tree, data_path,
             lambda: tf_data.load_inference_images(root, data_path, (8, 8, 1), None))


# --- what still works ----------------------------------------------------------------------------

def test_plain_files_load(tree: Path, mode: str) -> None:
    root = tree / "data"
    (root / "sub" / "bom.csv").write_bytes(b"\xef\xbb\xbfa,label\r\n1,0\r\n2,1\r\n")
    assert load_tabular(root, "sub/a.csv").X.tolist() == [[1.0], [2.0]]
    bom = load_tabular(root, "sub/bom.csv")  # the BOM is dropped, CRLF handled
    assert bom.feature_names == ["a"] and bom.y.tolist() == [0, 1]
    assert load_inputs(root, "a.csv", n_features=1, label_name="label").tolist() == [[1.0],
                                                                                     [2.0]]
    np.savez(root / "img.npz", x=np.zeros((4, 8, 8)), y=np.arange(4) % 2)
    assert tf_data.load_images(root, "img.npz", SPEC).x.shape == (4, 8, 8, 1)
    with open_data(root, "img.npz") as fh, np.load(fh, allow_pickle=False) as npz:
        assert npz["y"].tolist() == [0, 1, 0, 1]
    assert fh.closed


def test_symlinks_inside_the_root_still_work(tree: Path, mode: str) -> None:
    """As before the fix: a link (file or directory) that stays inside the root is followed, and
    the root may itself be a link."""
    root = tree / "data"
    os.symlink(root / "sub" / "a.csv", root / "link.csv")
    os.symlink("sub", root / "sublink")
    assert load_tabular(root, "link.csv").X.tolist() == [[1.0], [2.0]]
    assert load_tabular(root, "sublink/a.csv").X.tolist() == [[1.0], [2.0]]
    assert resolve_data_path(root, "link.csv") == (root / "sub" / "a.csv").resolve()
    os.symlink(root, tree / "root-link")  # DATA_ROOT itself reached through a symlink
    assert load_tabular(tree / "root-link", "sublink/a.csv").X.tolist() == [[1.0], [2.0]]


def test_read_errors_keep_their_messages(tree: Path, mode: str) -> None:
    root = tree / "data"
    (root / "latin1.csv").write_bytes(b"a,label\n\xe9,0\n")
    with pytest.raises(FailJob, match=r"latin1.csv: not a readable UTF-8 CSV file") as info:
        load_tabular(root, "latin1.csv")
    assert info.value.code == "invalid_data"
    (root / "broken.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(FailJob, match=r"broken.npz: not a readable .npz file") as info:
        tf_data.load_images(root, "broken.npz", SPEC)
    assert info.value.code == "invalid_data"
    (root / "empty.npz").write_bytes(b"")
    with pytest.raises(FailJob, match=r"not a readable .npz file"):
        tf_data.load_images(root, "empty.npz", SPEC)


def test_unopenable_file_names_only_the_data_path(tree: Path, mode: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def denied(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("a.csv"):  # root reads a mode-000 file, so the error is made
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(FailJob, match=r"'a.csv' could not be opened: permission denied") as info:
        load_tabular(tree / "data", "a.csv")
    assert info.value.code == "invalid_data_path" and str(tree) not in str(info.value)
