"""The seed's own commands (FAQ.md) map onto aiq: ``./scripts/docker-compose.sh`` runs Docker
Compose with deploy/compose.yaml, ``./scripts/run_local.sh`` runs ``aiq up``, and ``uv run
python src/worker.py`` runs ``aiq worker`` with the same env vars."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_sync

from streams.keys import QueueKeys
from tests.deploy_tools import ROOT
from tests.support import settings_for, spawn_worker

SHIM = ROOT / "src" / "worker.py"


def _run(argv: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("WORKER_TYPE", "MODEL_FRAMEWORK")}
    return subprocess.run(argv, env={**full, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_src_worker_with_a_bad_worker_type_fails_with_aiqs_one_line() -> None:
    done = _run([sys.executable, str(SHIM)], WORKER_TYPE="bogus")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("aiq worker: unknown worker type 'bogus'; known types: ")


def test_src_worker_with_a_mismatched_framework_says_which() -> None:
    done = _run([sys.executable, str(SHIM)], WORKER_TYPE="sklearn", MODEL_FRAMEWORK="pytorch")
    assert done.returncode == 2
    assert done.stderr.strip() == ("aiq worker: MODEL_FRAMEWORK='pytorch' does not match "
                                   "WORKER_TYPE='sklearn' (expects 'sklearn')")


@pytest.mark.slow
def test_src_worker_serves_the_type_from_the_env_and_drains_on_sigterm(redis_url: str,
                                                                      tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path)  # WORKER_TYPE=diagnostic, REDIS_URL, ...
    proc = spawn_worker(settings, tmp_path / "worker.log", argv=[sys.executable, SHIM])
    workers = QueueKeys("diagnostic").workers
    with redis_sync.Redis.from_url(redis_url) as r:
        deadline = time.monotonic() + 30
        while not r.scard(workers):
            assert proc.poll() is None and time.monotonic() < deadline, (
                (tmp_path / "worker.log").read_text())
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not r.scard(workers)  # deregistered on the way out


def test_docker_compose_sh_passes_arguments_to_compose_with_the_compose_file() -> None:
    script = str(ROOT / "scripts" / "docker-compose.sh")
    services = _run([script, "--profile", "*", "config", "--services"])
    assert services.returncode == 0, services.stderr
    assert {"ai-worker-sklearn", "ai-worker-pytorch-2.1", "ai-worker-pytorch-2.1-gpu",
            "ai-gateway", "nginx", "redis"} <= set(services.stdout.split())
    helped = _run([script, "up", "--help"])
    assert helped.returncode == 0 and "--scale" in helped.stdout
    refused = _run([script, "config", "--no-such-flag"])  # compose's error and exit status
    assert refused.returncode != 0 and "no-such-flag" in refused.stderr


def test_run_local_sh_is_aiq_up() -> None:
    done = _run([str(ROOT / "scripts" / "run_local.sh"), "--help"])
    assert done.returncode == 0, done.stderr
    assert "Usage: aiq up" in done.stdout
    assert "the gateway and one worker per installed" in " ".join(done.stdout.split())
