"""Per-type environments: ``aiq env install`` / ``aiq env list``, and where a type's python is.

The torch 2.0, torch 2.1 and tensorflow stacks conflict (``[tool.uv] conflicts``), so each worker
type with its own extra gets its own uv project environment, ``.venvs/<extra>`` in the project
checkout, made by ``UV_PROJECT_ENVIRONMENT=.venvs/<extra> uv sync --locked --extra <extra>
--extra s3`` (s3: any worker may keep its artifacts on S3; the dev group comes along, so that
environment's python also runs pytest). The sklearn and the built-in diagnostic types run in
the main environment (``.venv``, ``uv sync --extra sklearn``, plus ``--extra s3`` for S3).

Versions are read from an environment's ``site-packages`` metadata (``*.dist-info``), without
importing the framework or starting that environment's python.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path

from schemas.catalogue import WorkerType

__all__ = [
    "MAIN_ENV_EXTRAS",
    "VENVS_DIR_VAR",
    "WORKER_EXTRAS",
    "EnvError",
    "InstallResult",
    "dist_version",
    "ensure_current",
    "env_dir",
    "env_python",
    "has_own_env",
    "install",
    "install_command",
    "is_current",
    "project_root",
    "sync_command",
    "sync_extras",
    "uv_executable",
    "venvs_dir",
]

MAIN_ENV_EXTRAS = frozenset({"sklearn"})  # extras that live in the main environment
# Extras every per-type environment gets besides its own: a worker of any type may be pointed
# at ARTIFACT_URI=s3://... (s3fs), and the s3 extra installs beside every framework extra.
WORKER_EXTRAS = ("s3",)
VENVS_DIR_VAR = "AIQ_VENVS_DIR"  # where the per-type environments live (default: .venvs)
_TAIL_LINES = 40
# In an environment: the digest of the uv.lock and pyproject.toml it came from (the project's
# own metadata, e.g. its aiq.frameworks entry points, is installed from pyproject.toml).
LOCK_MARK = ".aiq-uv-lock.sha256"
# What uv prints when the package index cannot be reached (DNS, refused, reset, timeouts).
_NETWORK_SIGNS = ("error sending request", "dns error", "failed to lookup address",
                  "connection refused", "connection reset", "network is unreachable",
                  "timed out", "tcp connect error", "network connectivity is disabled")


class EnvError(Exception):
    """An environment cannot be made here; the message is the one line users read."""


def project_root() -> Path:
    """The checkout aiq runs from (aiq is installed editable into every environment)."""
    return Path(__file__).resolve().parent.parent


def venvs_dir() -> Path:
    configured = os.environ.get(VENVS_DIR_VAR, "").strip()
    return Path(configured).expanduser().resolve() if configured else project_root() / ".venvs"


def has_own_env(wt: WorkerType) -> bool:
    """Whether ``wt`` runs in ``.venvs/<extra>`` rather than in the main environment."""
    return wt.extra is not None and wt.extra not in MAIN_ENV_EXTRAS


def env_dir(extra: str) -> Path:
    return venvs_dir() / extra


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


def install_command(wt: WorkerType) -> str:
    """The one command a person runs to make ``wt`` runnable here."""
    if has_own_env(wt):
        return f"aiq env install {wt.name}"
    return wt.install_command  # the main environment: uv sync [--extra sklearn]


def sync_extras(extra: str) -> list[str]:
    """The ``--extra`` arguments of ``uv sync`` for ``extra``'s environment."""
    return [arg for name in (extra, *WORKER_EXTRAS) for arg in ("--extra", name)]


def sync_command(extra: str) -> str:
    """What ``aiq env install`` runs for ``extra``, as a shell line (from the project root)."""
    target = env_dir(extra)
    with contextlib.suppress(ValueError):
        target = target.relative_to(project_root())
    return f"UV_PROJECT_ENVIRONMENT={target} uv sync --locked {' '.join(sync_extras(extra))}"


def dist_version(env: Path, dist: str) -> str | None:
    """The version of distribution ``dist`` installed in ``env`` (None: not there)."""
    for site in sorted(env.glob("lib/python3*/site-packages")):
        for found in distributions(name=dist, path=[str(site)]):
            return found.version
    return None


def uv_executable() -> str:
    found = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV to itself
    if not found:
        raise EnvError("uv is not on PATH; install it (pip install uv) and try again")
    return found


@dataclass(frozen=True, slots=True)
class InstallResult:
    extra: str
    env: Path
    returncode: int
    seconds: float
    tail: str  # uv's last lines of output

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def problem(self) -> str | None:
        """One line saying why the install failed (None when it did not)."""
        if self.ok:
            return None
        lowered = self.tail.lower()
        if any(sign in lowered for sign in _NETWORK_SIGNS):
            return (f"cannot install {self.env}: the package index is not reachable from here "
                    f"(uv exited {self.returncode}; see its output above)")
        return f"installing {self.env} failed: uv exited {self.returncode}"


def install(extra: str, echo: Callable[[str], None]) -> InstallResult:
    """Create or update ``.venvs/<extra>`` from ``uv.lock`` (``uv sync --locked``), passing each
    line uv prints to ``echo``. Fast when the environment is already up to date."""
    root = project_root()
    if not (root / "uv.lock").is_file() or not (root / "pyproject.toml").is_file():
        raise EnvError(f"aiq runs from {root}, which is not the aiq checkout (no pyproject.toml "
                       "and uv.lock there): per-type environments are made from a checkout")
    target = env_dir(extra)
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}  # else uv warns
    env["UV_PROJECT_ENVIRONMENT"] = str(target)
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    started = time.monotonic()
    argv = [uv_executable(), "sync", "--locked", *sync_extras(extra)]
    with subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            echo(line)
    if proc.returncode == 0:
        (target / LOCK_MARK).write_text(lock_digest(root))
    return InstallResult(extra, target, proc.returncode, time.monotonic() - started,
                         "\n".join(tail))


def lock_digest(root: Path) -> str:
    digest = hashlib.sha256((root / "uv.lock").read_bytes())
    digest.update((root / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def is_current(extra: str) -> bool:
    """Whether ``.venvs/<extra>`` was last synced from the ``uv.lock`` and ``pyproject.toml``
    there are now."""
    try:
        return (env_dir(extra) / LOCK_MARK).read_text() == lock_digest(project_root())
    except OSError:
        return False


def ensure_current(extra: str, echo: Callable[[str], None]) -> InstallResult | None:
    """Sync ``.venvs/<extra>`` when ``uv.lock`` or ``pyproject.toml`` changed since it was made
    (an upgrade of aiq adds a dependency, or a framework plugin: a worker started from the old
    environment would fail to import it, or not know its type);
    None when it is current already (no uv call)."""
    return None if is_current(extra) else install(extra, echo)
