"""Per-type environments for tests, made through the code path of ``aiq env install``, and the
example plugin's worker environment.

``uv sync --locked`` into ``.venvs/<extra>``: from uv's cache when the environment is new, a
check of a second or so when it is up to date. An environment that cannot be made fails the test
with uv's own words (an unreachable package index included): never a skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import IO

import pytest

from aiq.envs import EnvError, env_python, install, project_root, uv_executable, venvs_dir

_ready: dict[str, Path] = {}  # extra -> its python, made (or checked) once per session


def ensure_env(extra: str, log_dir: Path) -> Path:
    """Create or update ``.venvs/<extra>`` and return its python (once per session)."""
    if extra in _ready:
        return _ready[extra]
    log = log_dir / f"install-{extra}.log"
    with log.open("w") as out:
        try:
            result = install(extra, lambda line: print(line, file=out, flush=True))
        except EnvError as exc:
            pytest.fail(f"cannot make the {extra} environment: {exc}", pytrace=False)
    if not result.ok:
        pytest.fail(f"{result.problem}\n--- uv's last lines ({log}) ---\n{result.tail}",
                    pytrace=False)
    print(f"{result.env}: ready in {result.seconds:.1f}s")
    _ready[extra] = env_python(result.env)
    return _ready[extra]


# --- the example plugin's worker environment (tests/test_plugin_example.py) ------------------

PLUGIN_DIR = project_root() / "examples" / "plugin"
_PLUGIN_ENV_PREFIX = "test-example-plugin-"


def _run_uv(argv: list[str], env: dict[str, str], out: IO[str]) -> bool:
    """``uv <argv>`` offline first (the warm cache has everything), then online."""
    for mode in (["--offline"], []):
        print(f"$ uv {' '.join([*argv, *mode])}", file=out, flush=True)
        proc = subprocess.run([uv_executable(), *argv, *mode], cwd=project_root(), env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=600, check=False)
        if proc.returncode == 0:
            return True
    return False


def example_plugin_env(log_dir: Path) -> Path:
    """A worker's own environment with aiq (from uv.lock, with the sklearn extra for the
    ``builtin:`` datasets) and ``examples/plugin``, both editable, as a user installs them:
    ``.venvs/test-example-plugin-<digest of the files that shape it>``, made once and kept (uv
    links from its cache: about a second). Its python."""
    digest = hashlib.sha256()
    for path in (project_root() / "uv.lock", project_root() / "pyproject.toml",
                 PLUGIN_DIR / "pyproject.toml"):
        digest.update(path.read_bytes())
    env_path = venvs_dir() / f"{_PLUGIN_ENV_PREFIX}{digest.hexdigest()[:12]}"
    python = env_python(env_path)
    if (env_path / ".ready").is_file():
        return python
    for old in venvs_dir().glob(f"{_PLUGIN_ENV_PREFIX}*"):
        shutil.rmtree(old, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = str(env_path)
    log = log_dir / "install-example-plugin.log"
    with log.open("w") as out:
        ok = _run_uv(["sync", "--locked", "--no-dev", "--extra", "sklearn"], env, out) \
            and _run_uv(["pip", "install", "--python", str(python), "-e", str(PLUGIN_DIR)],
                        env, out)
    if not ok:
        pytest.fail(f"cannot make the example plugin's environment\n{log.read_text()[-3000:]}",
                    pytrace=False)
    (env_path / ".ready").write_text("")
    return python
