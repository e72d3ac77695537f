"""``aiq health --worker``: is this host's worker alive? For exec probes of worker containers.

A worker registers a hash with a TTL of three heartbeat intervals (streams/registry.py) naming
its host and pid. The worker on this host is healthy when such a hash exists (its heartbeat
loop still runs) and names this host and a process alive here: a worker that died leaves its
hash behind for up to a TTL, but not its process. The probe reads Redis only; it never writes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

import psutil

from streams.connection import client
from streams.keys import QueueKeys
from streams.registry import type_workers
from streams.settings import RedisSettings


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    healthy: bool
    message: str


async def worker_health(settings: RedisSettings, worker_type: str, timeout_s: float,
                        hostname: str | None = None) -> WorkerHealth:
    """Look for a live registration of ``worker_type`` on ``hostname`` (this host by default).
    Redis errors propagate: whether an unreachable Redis counts as healthy is the caller's
    choice."""
    host = hostname or socket.gethostname()
    redis = client(settings.target, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                   retry_on_timeout=False)
    try:
        async with asyncio.timeout(timeout_s * 2):
            workers = await type_workers(redis, QueueKeys(worker_type, settings.redis_prefix),
                                         prune=False)
    finally:
        await redis.aclose()
    here = [w for w in workers if w.hostname == host]
    alive = [w for w in here if psutil.pid_exists(w.pid)]
    if not alive:
        seen = f" ({len(here)} registered here with no live process)" if here else ""
        return WorkerHealth(False, f"no live {worker_type} worker registered on {host}{seen}")
    w = max(alive, key=lambda w: w.heartbeat_at)
    age_s = max(0.0, time.time() - w.heartbeat_at / 1000)
    return WorkerHealth(True, f"{worker_type} worker {w.worker_id} ({w.state}, pid {w.pid}), "
                              f"heartbeat {age_s:.1f} s ago")
