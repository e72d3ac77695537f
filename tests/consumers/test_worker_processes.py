"""Workers as real processes: killed with SIGKILL, drained with SIGTERM, Redis restarted under
them, start-up checks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from aiq.redis_server import RedisServer
from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.support import eventually, settings_for, spawn_worker

pytestmark = pytest.mark.slow
KEYS = QueueKeys("diagnostic")


def sleep_job(seconds: float, steps: int = 20) -> TrainingRequest:
    return TrainingRequest(model_type="sleep",
                           hyperparameters={"seconds": seconds, "steps": steps})  # type: ignore[arg-type]


async def worker_ids(redis: Redis) -> set[str]:
    return set(await redis.smembers(KEYS.workers))


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    async def done() -> bool:
        return proc.poll() is not None

    await eventually(done, timeout=timeout, what="worker process exit")
    return proc.returncode


async def test_sigkilled_worker_job_finishes_elsewhere_once(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, lease_timeout_s=1.0, reclaim_interval_s=0.1)
    procs = {}
    for name in ("a", "b"):
        proc = spawn_worker(settings, tmp_path / f"{name}.log")
        procs[proc.pid] = proc
    try:
        await eventually(lambda: _two(redis), timeout=20, what="two workers registered")
        sub = await producer.submit_training(sleep_job(3.0))

        async def running() -> str | None:
            rec = await producer.get(sub.job_id)
            return rec.worker if rec.status is JobStatus.RUNNING else None

        victim = await eventually(running, timeout=10, what="job running")
        pid = int(victim.split("-")[-2])  # worker ids are <host>-<pid>-<token>
        os.kill(pid, signal.SIGKILL)
        killed_at = asyncio.get_running_loop().time()
        rec = await producer.wait(sub.job_id, timeout=15)
        took = asyncio.get_running_loop().time() - killed_at
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(15)
    assert procs[pid].returncode == -signal.SIGKILL
    assert rec.status is JobStatus.SUCCEEDED
    assert rec.worker != victim and rec.deliveries == 2
    assert took < 1.0 + 3.0 + 3.0  # lease timeout + job length + slack
    types = [f["type"] for _, f in await redis.xrange(KEYS.job_events(sub.job_id))]
    assert types.count("succeeded") == 1 and types.count("started") == 2
    assert await redis.hget(KEYS.stats, "succeeded") == "1"
    assert await redis.xlen(KEYS.stream(JobKind.TRAINING)) == 0


async def _two(redis: Redis) -> bool:
    return len(await worker_ids(redis)) == 2


async def test_sigterm_drains_running_job(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    proc = spawn_worker(settings_for(redis_url, tmp_path, shutdown_grace_s=10),
                        tmp_path / "w.log")
    await eventually(lambda: worker_ids(redis), timeout=20, what="worker registered")
    sub = await producer.submit_training(sleep_job(1.5))

    async def running() -> bool:
        return (await producer.get(sub.job_id)).status is JobStatus.RUNNING

    await eventually(running, what="job running")
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, timeout=15) == 0
    rec = await producer.get(sub.job_id)
    assert rec.status is JobStatus.SUCCEEDED  # finished within the grace period
    assert await worker_ids(redis) == set()  # deregistered


async def test_sigterm_hands_back_what_outlives_grace(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    proc = spawn_worker(settings_for(redis_url, tmp_path, shutdown_grace_s=0.3),
                        tmp_path / "w.log")
    await eventually(lambda: worker_ids(redis), timeout=20, what="worker registered")
    sub = await producer.submit_training(sleep_job(30, steps=300))

    async def running() -> bool:
        return (await producer.get(sub.job_id)).status is JobStatus.RUNNING

    await eventually(running, what="job running")
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, timeout=10) == 0
    rec = await producer.get(sub.job_id)
    assert rec.status is JobStatus.QUEUED  # handed back at once, not waiting for the lease
    types = [f["type"] for _, f in await redis.xrange(KEYS.job_events(sub.job_id))]
    assert types[-1] == "requeued"
    assert await redis.xlen(KEYS.stream(JobKind.TRAINING)) == 1
    assert (await redis.xpending(KEYS.stream(JobKind.TRAINING), "workers"))["pending"] == 0


async def test_worker_survives_redis_restart(
        redis: Redis, redis_url: str, redis_server: RedisServer, tmp_path: Path) -> None:
    proc = spawn_worker(settings_for(redis_url, tmp_path), tmp_path / "w.log")
    try:
        await eventually(lambda: worker_ids(redis), timeout=20, what="worker registered")
        redis_server.stop()
        redis_server.start()
        fresh = Redis.from_url(redis_url, decode_responses=True)
        await fresh.flushall()  # even the consumer group is gone: the worker recreates it
        producer = Producer(fresh)
        sub = await producer.submit_training(TrainingRequest(model_type="noop"))
        rec = await producer.wait(sub.job_id, timeout=20)
        await fresh.aclose()
        assert rec.status is JobStatus.SUCCEEDED
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_TYPE": "quantum"}, "unknown WORKER_TYPE 'quantum'"),
        ({"WORKER_TYPE": "numpy-example", "MODEL_FRAMEWORK": "numpy_example"},
         "no framework plugin installed in this environment declares it (install the plugin "
         "package that provides it, e.g. uv pip install <plugin>)"),  # examples/plugin's type
        ({"WORKER_TYPE": "sklearn", "MODEL_FRAMEWORK": "pytorch"},
         "does not match WORKER_TYPE='sklearn'"),
        ({"WORKER_TYPE": "pytorch-2.1", "MODEL_FRAMEWORK": "pytorch"},
         "needs torch >=2.1,<2.2, which is not installed"),
        ({"WORKER_TYPE": "pytorch-2.1-gpu", "MODEL_FRAMEWORK": "pytorch"}, "needs torch"),
        ({"WORKER_TYPE": "diagnostic", "MODEL_FRAMEWORK": "diagnostic", "USE_GPU": "true"},
         "is CPU-only"),
        # the renewal period (RECLAIM_INTERVAL_S) must leave room for a late renewal
        ({"WORKER_TYPE": "diagnostic", "LEASE_TIMEOUT_S": "10", "RECLAIM_INTERVAL_S": "6"},
         "RECLAIM_INTERVAL_S=6 is also how often leases are renewed: it must be at most half "
         "of LEASE_TIMEOUT_S=10"),
    ],
)
def test_startup_checks_fail_with_one_line(env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("WORKER_TYPE", "MODEL_FRAMEWORK")}
    env = {"MODEL_FRAMEWORK": "diagnostic", **env}
    proc = subprocess.run([sys.executable, "-m", "consumers"], env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
