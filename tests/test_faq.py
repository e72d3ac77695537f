"""The commands docs/FAQ.md marks *(tested)*, run as written there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from redis.asyncio import Redis

from schemas.catalogue import route
from schemas.requests import TrainingRequest
from streams.producer import Producer

ROOT = Path(__file__).resolve().parent.parent
FAQ = (ROOT / "docs" / "FAQ.md").read_text()


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    return uv


def _run(*argv: str, timeout: float = 120, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def test_aiq_types_lists_every_framework() -> None:
    assert "uv run aiq types" in FAQ
    out = _run(sys.executable, "-m", "aiq", "types")
    assert out.returncode == 0, out.stderr
    for name in ("pytorch-2.0", "pytorch-2.1-gpu", "tensorflow", "sklearn", "diagnostic"):
        assert name in out.stdout


def test_aiq_env_list_shows_each_environment() -> None:
    assert "uv run aiq env list" in FAQ
    out = _run(sys.executable, "-m", "aiq", "env", "list", env={"COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert ".venvs/pytorch_2_1" in out.stdout and ".venvs/tensorflow" in out.stdout


def test_the_lock_pins_both_torch_versions() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    torch = sorted(p["version"] for p in lock["package"] if p["name"] == "torch")
    assert any(v.startswith("2.0.") for v in torch) and any(v.startswith("2.1.") for v in torch)
    assert "2.0.1" in FAQ and "2.1.2" in FAQ and all(v in FAQ for v in torch)


def test_conflicting_extras_are_refused() -> None:
    out = _run(_uv(), "sync", "--extra", "pytorch_2_0", "--extra", "pytorch_2_1", "--dry-run",
               env={"UV_OFFLINE": "1"})
    assert out.returncode != 0
    assert "are incompatible with the declared conflicts" in out.stderr
    assert "are incompatible with the declared conflicts" in FAQ


def test_a_wrong_worker_setting_stops_with_one_line() -> None:
    out = _run(sys.executable, "-m", "aiq", "worker", "--type", "pytorch-9.9")
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown worker type 'pytorch-9.9'" in lines[0]


@pytest.mark.parametrize(("model_type", "gpu", "expected"), [
    ("bert", False, "pytorch-2.1"), ("resnet", True, "pytorch-2.0-gpu"),
    ("inception", False, "tensorflow"), ("random_forest", False, "sklearn"),
])
def test_routing_examples(model_type: str, gpu: bool, expected: str) -> None:
    assert f"`{expected}`" in FAQ
    assert route(model_type, gpu) == expected


async def test_xlen_of_a_type_stream_counts_its_jobs(redis: Redis, redis_url: str) -> None:
    producer = Producer(redis)
    for _ in range(3):
        await producer.submit_training(TrainingRequest(model_type="bert",
                                                       data_path="builtin:sentiment"))
    command = re.search(r"redis-cli (XLEN '[^']+')", FAQ)
    assert command is not None
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not on PATH")
    out = _run(cli, "-u", redis_url, *command.group(1).replace("'", "").split())
    assert out.stdout.strip() == "3", out
    wrong = _run(cli, "-u", redis_url, "LLEN", "ai:training:{pytorch-2.1}:queue")
    assert "WRONGTYPE" in wrong.stdout + wrong.stderr  # why the original FAQ's LLEN misled
