"""Command jobs on workers that are real processes: a worker SIGKILLed mid-command leaves no
process behind (its command's grandchildren included, found in the process table) and the job
finishes on another worker; a worker stopped with SIGTERM stops its command and hands the job
back."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from redis.asyncio import Redis

from schemas.status import JobStatus
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.consumers.command_support import command_settings, marker, processes_with, submit
from tests.support import eventually, worker_process

pytestmark = pytest.mark.slow
KEYS = QueueKeys("diagnostic")


def family(token: str) -> str:
    """On its first delivery: a background sleep, a Python that starts a sleep of its own and
    waits, and a sleep in the foreground, all with ``token`` on their command lines. On any
    later delivery it ends at once."""
    grandchild = (f"import subprocess, time; subprocess.Popen(['sleep', '{token}']); "
                  "time.sleep(1000)")
    return (f'if [ "$AIQ_DELIVERY" = 1 ]; then sleep {token} & python -c "{grandchild}" & '
            f'sleep {token}; fi; echo "finished on delivery $AIQ_DELIVERY"')


async def _registered(redis: Redis, count: int) -> bool:
    return len(await redis.smembers(KEYS.workers)) >= count


async def _running_family(producer: Producer, job_id: str, token: str) -> str | None:
    rec = await producer.get(job_id)
    found = processes_with(token)
    # sh, its background sleep, the Python, the Python's sleep, the foreground sleep
    return rec.worker if rec.status is JobStatus.RUNNING and len(found) >= 5 else None


async def _all_gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


async def test_a_sigkilled_worker_leaves_no_orphan_and_the_job_finishes_elsewhere(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    token = marker()
    settings = command_settings(redis_url, tmp_path, lease_timeout_s=1.0,
                                command_kill_grace_s=1.0)
    with contextlib.ExitStack() as stack:
        for n in ("a", "b"):
            stack.enter_context(worker_process(settings, tmp_path / f"{n}.log", grace_s=30))
        await eventually(lambda: _registered(redis, 2), timeout=30, what="two workers")
        sub = await submit(producer, ["sh", "-c", family(token)])
        victim = await eventually(lambda: _running_family(producer, sub.job_id, token),
                                  timeout=30, what="the command and its grandchildren running")
        pids = [p.pid for p in processes_with(token)]
        pid = int(victim.split("-")[-2])  # worker ids are <host>-<pid>-<token>
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: _all_gone(pids), timeout=15,
                         what="every process of the killed worker's command gone")
        rec = await producer.wait(sub.job_id, timeout=60)
        logs = [f["line"] for _, f in await redis.xrange(KEYS.job_logs(sub.job_id))]
    assert rec.status is JobStatus.SUCCEEDED and rec.deliveries == 2
    assert rec.worker != victim
    assert "finished on delivery 2" in logs
    assert processes_with(token) == []


async def test_sigterm_stops_a_running_command_and_hands_the_job_back(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    token = marker()
    settings = command_settings(redis_url, tmp_path, shutdown_grace_s=0.3,
                                command_kill_grace_s=1.0)
    with worker_process(settings, tmp_path / "w.log", grace_s=30) as proc:
        await eventually(lambda: _registered(redis, 1), timeout=30, what="the worker")
        sub = await submit(producer, ["sh", "-c", family(token)])
        await eventually(lambda: _running_family(producer, sub.job_id, token), timeout=30,
                         what="the command running")
        pids = [p.pid for p in processes_with(token)]
        proc.send_signal(signal.SIGTERM)

        async def exited() -> bool:
            return proc.poll() is not None

        await eventually(exited, timeout=30, what="the worker to exit")
    assert proc.returncode == 0
    assert await _all_gone(pids)  # stopped before the worker exited
    rec = await producer.get(sub.job_id)
    assert rec.status is JobStatus.QUEUED  # handed back at once, for another worker
    types = [f["type"] for _, f in await redis.xrange(KEYS.job_events(sub.job_id))]
    assert types[-1] == "requeued"


def test_a_command_dir_that_cannot_be_written_stops_the_worker_with_one_line() -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("WORKER_TYPE", "MODEL_FRAMEWORK")}
    env = {**base, "WORKER_TYPE": "diagnostic", "MODEL_FRAMEWORK": "diagnostic",
           "COMMAND_JOBS": "true", "COMMAND_ENV_ROOT": "/proc/aiq-cannot-be-here"}
    proc = subprocess.run([sys.executable, "-m", "consumers"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "COMMAND_ENV_ROOT=/proc/aiq-cannot-be-here" in lines[0], \
        proc.stderr
