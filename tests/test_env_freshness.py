"""A per-type environment made from an older uv.lock or pyproject.toml is brought up to date
before a worker starts from it (a new dependency would otherwise fail its import, a new
framework plugin's entry point would be missing)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aiq import envs


def test_an_environment_is_current_only_for_the_lock_it_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envs.VENVS_DIR_VAR, str(tmp_path))
    mark = tmp_path / "pytorch_2_1" / envs.LOCK_MARK
    assert not envs.is_current("pytorch_2_1")  # never made, or made before the mark existed
    mark.parent.mkdir()
    lock = (envs.project_root() / "uv.lock").read_bytes()
    project = (envs.project_root() / "pyproject.toml").read_bytes()
    mark.write_text(hashlib.sha256(lock + project).hexdigest())
    assert envs.is_current("pytorch_2_1")
    assert envs.ensure_current("pytorch_2_1", print) is None  # current: uv is not run
    mark.write_text(hashlib.sha256(lock + b"# an older lock" + project).hexdigest())
    assert not envs.is_current("pytorch_2_1")
    # an older pyproject.toml (e.g. before an entry point was added): synced again too
    mark.write_text(hashlib.sha256(lock + project + b"# an older project").hexdigest())
    assert not envs.is_current("pytorch_2_1")
