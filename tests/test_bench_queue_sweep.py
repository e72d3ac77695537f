"""``bench.queue_bench --sweep`` end to end at a tiny size: its own Redis, the raw loop, the bare
threads' ceiling and worker drains in one and in two processes, unpinned and with WORKER_CPUS
(CPU 0: every machine has it), each drain's checks (every job
succeeded once, nothing pending) must pass for the table to print. The figures themselves are
not checked (a benchmark asserts nothing); the CPU ceiling's arithmetic is."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.queue_bench import ceiling
from consumers.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_short_job_sweep_runs_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.queue_bench", "--sweep", "--sweep-jobs", "redis_io,noop",
         "--sweep-slots", "4", "--sweep-processes", "1,2", "--sweep-cpus", "all 0/0",
         "--rounds", "1", "--jobs", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=220, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # one row per (job, slots) cell: 4 slots in one process, and 2x2 in two
    for job, label in (("redis_io", "4"), ("noop", "4"), ("redis_io", "2x2"), ("noop", "2x2"),
                       ("redis_io", "4 @0/0"), ("redis_io", "2x2 @0/0")):
        assert re.search(rf"{job}\s*│\s*{label}\s*│", out), out[-3000:]
    # the bare threads' ceiling is measured for redis_io only, as a positive rate
    assert re.search(r"redis_io\s*│\s*4\s*│\s*[\d,]+\s*│\s*[1-9][\d,]*\s*│", out), out[-3000:]
    assert re.search(r"noop\s*│\s*4\s*│\s*[\d,]+\s*│\s*-\s*│", out), out[-3000:]
    assert "aiq rounds (jobs/s): redis_io@4:" in out.replace("\n", " ")
    # the CPU ceiling of each redis_io cell that has a noop cell of the same shape
    flat = out.replace("\n", " ")
    for label in ("4", "2x2", "4 @0/0", "2x2 @0/0"):
        assert re.search(rf"CPU ceiling of redis_io@{label}: [1-9][\d,]* jobs/s", flat), \
            out[-3000:]


@pytest.mark.parametrize(("costs", "cpus", "rate"), [
    ((40, 60, 100), (1, 2), 10_000),  # the worker's CPU and the machine bind alike
    ((100, 100, 200), (2, 2), 5_000),  # the machine binds: Redis shares its CPUs
    ((100, 100, 10), (1, 4), 5_000),  # the worker's one CPU binds
])
def test_the_cpu_ceiling_is_the_tighter_of_the_worker_and_the_machine(
        costs: tuple[float, float, float], cpus: tuple[int, int], rate: float) -> None:
    assert ceiling(*costs, *cpus) == pytest.approx(rate)


@pytest.mark.timeout(120)
def test_bare_threads_run_under_the_job_threads_default_policy(redis_url: str) -> None:
    """The ceiling is that of the worker as it ships: its job threads run under SCHED_BATCH by
    default, where the same round trips cost less CPU than under the normal policy."""
    done = subprocess.run([sys.executable, "-m", "bench._bare_threads", redis_url, "3", "30"],
                          cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["policy"] == WorkerSettings.model_fields["job_thread_policy"].default
    assert result["rate"] > 0
