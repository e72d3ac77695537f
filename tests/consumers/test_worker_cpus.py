"""WORKER_CPUS: the CPU list is parsed as taskset writes it, a bad one stops the worker at start
with one line naming the setting, and a real worker process with it set runs, together with
every thread it started (job threads included), on those CPUs only, and serves jobs; its job
threads run under SCHED_BATCH (JOB_THREAD_POLICY's default), its event loop under the normal
policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from redis.asyncio import Redis

from consumers.__main__ import load_settings
from consumers.affinity import format_cpus, parse_cpus
from consumers.startup import StartupError
from schemas.requests import TrainingRequest
from schemas.status import JobStatus
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.support import eventually, settings_for, worker_process

KEYS = QueueKeys("diagnostic")
LINUX = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity: Linux")


@pytest.mark.parametrize(("text", "cpus"), [
    ("0", {0}), ("0-3", {0, 1, 2, 3}), ("0,2,4-5", {0, 2, 4, 5}), (" 1 , 3 ", {1, 3}),
    ("2-2", {2}), ("1,1,0-1", {0, 1}),
])
def test_cpu_lists_parse_as_taskset_writes_them(text: str, cpus: set[int]) -> None:
    assert parse_cpus(text) == cpus


@pytest.mark.parametrize("text", ["a", "3-1", "1,,2", "-1", "0-", "1.5", "0-99999", "0;1"])
def test_a_bad_cpu_list_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="CPU"):
        parse_cpus(text)


def test_cpu_sets_are_written_back_as_ranges() -> None:
    assert format_cpus(frozenset({0, 1, 2, 5, 7, 8})) == "0-2,5,7-8"
    assert format_cpus(frozenset({3})) == "3"


def test_a_bad_worker_cpus_names_the_setting() -> None:
    with pytest.raises(StartupError, match=r"^WORKER_CPUS: .*not a CPU list"):
        load_settings(worker_type="diagnostic", model_framework="diagnostic",
                      worker_cpus="first")
    unset = load_settings(worker_type="diagnostic", model_framework="diagnostic",
                          worker_cpus=" ")
    assert unset.cpus is None


@LINUX
def test_a_cpu_this_process_may_not_use_stops_the_worker_with_one_line() -> None:
    missing = max(os.sched_getaffinity(0)) + 1
    base = {k: v for k, v in os.environ.items() if k not in ("WORKER_TYPE", "MODEL_FRAMEWORK")}
    env = {**base, "WORKER_TYPE": "diagnostic", "MODEL_FRAMEWORK": "diagnostic",
           "WORKER_CPUS": str(missing)}
    proc = subprocess.run([sys.executable, "-m", "consumers"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"aiq worker: WORKER_CPUS={missing}: CPU {missing} is not "
                               "available to this process (available: "), lines[0]


def _threads_cpus(pid: int) -> dict[int, frozenset[int]]:
    """Each thread of the process -> the CPUs it may run on (Linux: per-thread affinity); a
    thread that ended between the listing and the look-up is left out."""
    out = {}
    for thread in psutil.Process(pid).threads():
        try:
            out[thread.id] = frozenset(os.sched_getaffinity(thread.id))
        except ProcessLookupError:
            continue
    return out


def _threads_policies(pid: int) -> dict[int, int]:
    """Each thread of the process -> its scheduling policy (os.SCHED_*)."""
    out = {}
    for thread in psutil.Process(pid).threads():
        try:
            out[thread.id] = os.sched_getscheduler(thread.id)
        except ProcessLookupError:
            continue
    return out


@LINUX
@pytest.mark.slow
async def test_a_worker_with_worker_cpus_runs_on_those_cpus_only(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))  # one CPU of those this test may use
    settings = settings_for(redis_url, tmp_path, max_concurrent_jobs=4,
                            worker_cpus=str(cpu))
    producer = Producer(redis)
    with worker_process(settings, tmp_path / "w.log", grace_s=30) as proc:
        async def registered() -> bool:
            return bool(await redis.scard(KEYS.workers))

        await eventually(registered, timeout=60, what="the worker registered")
        subs = [await producer.submit_training(TrainingRequest(
            model_type="redis_io", hyperparameters={"round_trips": 3})) for _ in range(12)]
        records = [await producer.wait(s.job_id, timeout=60) for s in subs]
        threads = _threads_cpus(proc.pid)  # job threads exist now: they ran the jobs
        policies = _threads_policies(proc.pid)
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 12
    # the loop thread, the 4 job threads and whatever else the worker started
    assert len(threads) >= 5, threads
    assert set(threads.values()) == {frozenset({cpu})}
    # A worker process serves on uvloop's event loop (python -m consumers).
    started = [json.loads(line) for line in (tmp_path / "w.log").read_text().splitlines()
               if '"worker started"' in line]
    assert [s["event_loop"] for s in started] == ["uvloop"], started
    # JOB_THREAD_POLICY's default: the 4 job threads under SCHED_BATCH, the loop's thread
    # (whose id is the process id) under the normal policy.
    assert [s["job_threads"] for s in started] == ["batch"], started
    assert policies[proc.pid] == os.SCHED_OTHER
    assert sum(p == os.SCHED_BATCH for p in policies.values()) == 4, policies


@LINUX
def test_aiq_worker_cpus_is_the_setting() -> None:
    missing = max(os.sched_getaffinity(0)) + 1
    base = {k: v for k, v in os.environ.items()
            if k not in ("WORKER_TYPE", "MODEL_FRAMEWORK", "WORKER_CPUS")}
    proc = subprocess.run([sys.executable, "-m", "aiq", "worker", "--type", "diagnostic",
                           "--cpus", f"0,{missing}"], env=base, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert f"WORKER_CPUS=0,{missing}: CPU {missing} is not available" in proc.stderr, \
        proc.stderr
