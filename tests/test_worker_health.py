"""``aiq health --worker``: the exec probe of worker containers (deploy/k8s). Healthy exactly
when a worker of the type registered from this host, its process is alive here, and its
heartbeat has not expired; Redis unreachable is unhealthy unless ``--redis-down-ok``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from aiq.cli import app
from aiq.redis_server import free_port
from schemas.workers import WorkerInfo
from streams import registry
from streams.keys import QueueKeys
from tests.support import eventually, running_worker, settings_for, spawn_worker

KEYS = QueueKeys("diagnostic")
runner = CliRunner()


async def probe(redis_url: str, *args: str) -> Result:
    """The CLI in a thread (it runs its own event loop), Redis from REDIS_URL as in a pod."""
    return await asyncio.to_thread(runner.invoke, app, ["health", "--worker", *args],
                                   env={"REDIS_URL": redis_url, "WORKER_TYPE": "diagnostic"})


def registration(hostname: str, pid: int) -> WorkerInfo:
    now = int(time.time() * 1000)
    return WorkerInfo(worker_id=f"{hostname}-{pid}-abc", worker_type="diagnostic",
                      framework="diagnostic", framework_version="1", hostname=hostname,
                      pid=pid, started_at=now, heartbeat_at=now, max_concurrent_jobs=2)


async def test_a_running_worker_is_healthy_and_a_stopped_one_is_not(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    async with running_worker(settings_for(redis_url, tmp_path)) as worker:
        await eventually(lambda: redis.exists(KEYS.worker(worker.name)), what="registration")
        result = await probe(redis_url)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"healthy: diagnostic worker {worker.name} (running")
        other = await probe(redis_url, "--type", "sklearn")  # no worker of that type here
        assert other.exit_code == 1 and "no live sklearn worker" in other.output
    result = await probe(redis_url)  # deregistered on its graceful stop
    assert result.exit_code == 1
    assert result.output == f"unhealthy: no live diagnostic worker registered on " \
                            f"{socket.gethostname()}\n"


async def test_only_this_hosts_live_process_counts(redis: Redis, redis_url: str) -> None:
    """A registration from another host (another pod of the type) or one left behind by a
    process that died here (its hash outlives it by up to a TTL) is not this worker."""
    await registry.heartbeat(redis, KEYS, registration("another-pod", os.getpid()), ttl_s=30)
    result = await probe(redis_url)
    assert result.exit_code == 1 and "no live diagnostic worker" in result.output

    gone_pid = 2**22 + 1  # above Linux's largest pid_max: no process has it
    await registry.heartbeat(redis, KEYS, registration(socket.gethostname(), gone_pid), ttl_s=30)
    result = await probe(redis_url)
    assert result.exit_code == 1
    assert "(1 registered here with no live process)" in result.output

    await registry.heartbeat(redis, KEYS, registration(socket.gethostname(), os.getpid()),
                             ttl_s=30)
    assert (await probe(redis_url)).exit_code == 0


async def test_redis_unreachable_is_unhealthy_unless_told_otherwise() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = await probe(nowhere, "--timeout", "0.5")
    assert result.exit_code == 1 and result.output.startswith("unhealthy: redis unreachable")
    result = await probe(nowhere, "--timeout", "0.5", "--redis-down-ok")
    assert result.exit_code == 0 and result.output.startswith("unknown: redis unreachable")


def test_an_unknown_type_is_a_usage_error() -> None:
    result = runner.invoke(app, ["health", "--worker", "--type", "nope"])
    assert result.exit_code == 2 and "unknown worker type 'nope'" in result.output


@pytest.mark.slow
async def test_probe_of_a_worker_process_sees_it_die_at_once(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """As the exec probe runs it (``python -m aiq health --worker`` beside ``python -m
    consumers``): 0 while the worker serves; 1 right after a SIGKILL, while its registration
    is still in Redis."""
    settings = settings_for(redis_url, tmp_path, heartbeat_interval_s=5.0)
    proc = spawn_worker(settings, tmp_path / "worker.log")
    env = {**os.environ, "REDIS_URL": redis_url, "WORKER_TYPE": "diagnostic"}
    command = [sys.executable, "-m", "aiq", "health", "--worker"]

    async def registered() -> bool:
        return bool(await redis.scard(KEYS.workers))

    await eventually(registered, timeout=30, what="the worker to register")
    alive = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True,
                                    text=True, timeout=60)
    assert alive.returncode == 0, alive.stdout + alive.stderr
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [worker_id] = await redis.smembers(KEYS.workers)
    assert await redis.exists(KEYS.worker(worker_id))  # the hash outlives the process
    dead = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True,
                                   text=True, timeout=60)
    assert dead.returncode == 1 and "no live process" in dead.stdout + dead.stderr
