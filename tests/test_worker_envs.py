"""Two torch versions serving side by side, each worker in its own environment, and the CLI's
view of those environments.

The pytorch-2.0 worker is started as a user starts it from the main environment
(``aiq worker --type pytorch-2.0``, which execs ``.venvs/pytorch_2_0``'s python), the pytorch-2.1
worker with ``.venvs/pytorch_2_1/bin/python -m consumers``; both against one real Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from redis.asyncio import Redis
from typer.testing import CliRunner

from aiq.cli import app
from aiq.envs import VENVS_DIR_VAR, dist_version, project_root, uv_executable
from aiq.installed import availability
from aiq.up import select_types
from schemas.catalogue import CATALOGUE
from schemas.requests import Hyperparameters, TrainingRequest
from schemas.status import JobStatus
from schemas.workers import WorkerInfo
from streams.producer import Producer
from streams.registry import list_workers
from tests.envs import ensure_env
from tests.support import eventually, settings_for, spawn_worker

TORCH_TYPES = {"pytorch-2.0": "pytorch_2_0", "pytorch-2.1": "pytorch_2_1"}  # type -> extra
runner = CliRunner()


def _training(worker_type: str) -> TrainingRequest:
    return TrainingRequest(model_type="bert", data_path="builtin:sentiment",
                           hyperparameters=Hyperparameters(epochs=1),
                           framework_override=worker_type)


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    pythons = {t: ensure_env(extra, tmp_path) for t, extra in TORCH_TYPES.items()}
    argv: dict[str, list[str | Path]] = {
        "pytorch-2.0": [sys.executable, "-m", "aiq", "worker", "--type", "pytorch-2.0"],
        "pytorch-2.1": [pythons["pytorch-2.1"], "-m", "consumers"],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for worker_type, command in argv.items():
            # a long lease: a CPU-bound training step must never look like a dead worker
            settings = settings_for(redis_url, tmp_path, worker_type, lease_timeout_s=30.0,
                                    max_concurrent_jobs=1)
            procs[worker_type] = spawn_worker(settings, tmp_path / f"{worker_type}.log",
                                              command)
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            proc.wait(30)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_torch_2_0_and_2_1_workers_serve_side_by_side(
        redis: Redis, workers: dict[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    async def both_registered() -> dict[str, WorkerInfo] | None:
        for worker_type, proc in workers.items():
            assert proc.poll() is None, (f"{worker_type} worker exited {proc.returncode}:\n"
                                         f"{(tmp_path / f'{worker_type}.log').read_text()}")
        found = {w.worker_type: w for w in await list_workers(redis)}
        return found if set(found) == set(TORCH_TYPES) else None

    live = await eventually(both_registered, timeout=120, interval=0.2,
                            what="a pytorch-2.0 and a pytorch-2.1 worker registered")
    for worker_type, extra in TORCH_TYPES.items():
        info = live[worker_type]
        installed = dist_version(project_root() / ".venvs" / extra, "torch")
        assert installed is not None
        assert Version(info.framework_version).public == installed, info  # 2.0.1+cu117: 2.0.1
        assert installed in SpecifierSet(CATALOGUE[worker_type].version_spec)
        assert info.pid == workers[worker_type].pid  # aiq worker exec'd, no extra process

    producer = Producer(redis)
    jobs = {t: (await producer.submit_training(_training(t))).job_id for t in TORCH_TYPES}
    for worker_type, job_id in jobs.items():
        record = await producer.wait(job_id, timeout=300)
        assert record.status is JobStatus.SUCCEEDED, record
        assert record.worker == live[worker_type].worker_id
        assert record.result is not None
        assert record.result["framework"] == "pytorch"
        assert record.result["framework_version"] == live[worker_type].framework_version


def test_both_torch_extras_in_one_environment_is_uvs_conflict_error(tmp_path: Path) -> None:
    target = tmp_path / "env"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = str(target)
    proc = subprocess.run(
        [uv_executable(), "sync", "--dry-run", "--extra", "pytorch_2_0", "--extra", "pytorch_2_1"],
        cwd=project_root(), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert ("Extras `pytorch-2-0` and `pytorch-2-1` are incompatible with the declared "
            "conflicts") in proc.stderr, proc.stderr
    assert not target.exists()


# --- the CLI's view, with environments made up on disk ---------------------------------------


def _fake_env(venvs: Path, extra: str, torch_version: str) -> Path:
    """An environment as ``uv sync`` leaves it, as far as aiq looks: a python and dist-info."""
    env = venvs / extra
    site = env / "lib" / "python3.11" / "site-packages" / f"torch-{torch_version}.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: "
                                   f"{torch_version}\n")
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to(sys.executable)
    return env


@pytest.fixture
def venvs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(VENVS_DIR_VAR, str(tmp_path / "venvs"))
    return tmp_path / "venvs"


def test_env_list_reads_versions_and_names_install_commands(venvs: Path) -> None:
    _fake_env(venvs, "pytorch_2_0", "2.0.1")
    _fake_env(venvs, "pytorch_2_1", "2.0.1")  # the wrong torch for its type
    result = runner.invoke(app, ["env", "list"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()
            if line.split()[:1] and line.split()[0] in CATALOGUE}
    assert "torch 2.0.1" in rows["pytorch-2.0"] and "ready" in rows["pytorch-2.0"]
    assert str(venvs / "pytorch_2_0") in rows["pytorch-2.0"]
    assert "needs >=2.1,<2.2: aiq env install pytorch-2.1" in rows["pytorch-2.1"]
    assert "not installed: aiq env install tensorflow" in rows["tensorflow"]
    assert "scikit-learn 1.3" in rows["sklearn"] and "ready" in rows["sklearn"]


def test_up_runs_each_installed_type_with_its_environments_python(venvs: Path) -> None:
    env = _fake_env(venvs, "pytorch_2_0", "2.0.1")
    started, skipped = select_types(None)
    pythons = {a.worker_type.name: a.python for a in started}
    assert pythons["pytorch-2.0"] == env / "bin" / "python"
    assert pythons["sklearn"] == pythons["diagnostic"] == Path(sys.executable)
    hints = {a.worker_type.name: a.hint for a in skipped}
    assert hints["pytorch-2.1"] == "pytorch-2.1: not installed — aiq env install pytorch-2.1"
    assert hints["tensorflow"] == "tensorflow: not installed — aiq env install tensorflow"
    assert hints["pytorch-2.0-gpu"].endswith("aiq env install pytorch-2.0-gpu")


def test_worker_of_a_type_without_its_environment_names_the_command(venvs: Path) -> None:
    assert availability(CATALOGUE["pytorch-2.0"]).python is None
    result = runner.invoke(app, ["worker", "--type", "pytorch-2.0"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].endswith("install its environment with: aiq env install pytorch-2.0")


def test_env_install_refuses_unknown_types_and_needs_a_choice() -> None:
    for args in (["env", "install"], ["env", "install", "--all", "sklearn"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
    result = runner.invoke(app, ["env", "install", "nope"])
    assert result.exit_code == 2 and "unknown worker type nope" in result.output
