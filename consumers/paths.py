"""Paths a job names inside a configured root (the data root): resolved with symlinks and
``..`` followed first, so nothing can point outside it. No framework imports, so the command
runner (consumers/command) shares the checks that data files get (consumers/data.py)."""

from __future__ import annotations

import errno
from pathlib import Path

from consumers.errors import FailJob


def why(exc: BaseException) -> str:
    """What went wrong with a path, without the server's paths in it."""
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return "a symlink loop"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "not a usable path"


def resolve_under_root(root: Path, path: str, field: str) -> Path:
    """``path`` (relative to ``root``, or absolute inside it), resolved; ``FailJob`` when it is
    unusable or resolves outside the root. Codes name ``field``: ``invalid_<field>``,
    ``<field>_outside_root``."""
    base = root.resolve()
    try:
        candidate = Path(path)
        resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a symlink loop ...
        raise FailJob(f"invalid {field} {path!r}: {why(exc)}", code=f"invalid_{field}") from exc
    if not resolved.is_relative_to(base):
        raise FailJob(
            f"{field} {path!r} resolves outside the data root; use a path relative to the data "
            "root (or an absolute path inside it)", code=f"{field}_outside_root")
    return resolved
