"""``bench.bulk_bench`` end to end at a tiny size: its own Redis and gateway process, every row
measured. The figures themselves are not checked (a benchmark asserts nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_bulk_bench_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bulk.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.bulk_bench", "--jobs", "300", "--batch", "100",
         "--single-jobs", "100", "--rounds", "1", "--json", str(out),
         "--gateway-log", str(tmp_path / "gateway.log")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "÷ raw" in done.stdout and "POST /jobs/training/batch" in done.stdout
    rounds = json.loads(out.read_text())["rounds"]
    assert set(rounds) == {"raw", "producer", "http", "single"}
    assert all(len(v) == 1 and v[0] > 0 for v in rounds.values())
