"""Per-type environments for tests, made through the code path of ``aiq env install``.

``uv sync --locked`` into ``.venvs/<extra>``: from uv's cache when the environment is new, a
check of a second or so when it is up to date. An environment that cannot be made fails the test
with uv's own words (an unreachable package index included): never a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aiq.envs import EnvError, env_python, install

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
