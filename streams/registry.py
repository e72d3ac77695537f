"""Worker registration: a hash per worker with a TTL, renewed by heartbeats, listed per type."""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from schemas.catalogue import CATALOGUE
from schemas.workers import WorkerInfo
from streams.keys import DEFAULT_PREFIX, QueueKeys

_JSON = ("running_jobs", "gpus")


def _to_hash(info: WorkerInfo) -> dict[str, str]:
    raw = info.model_dump(mode="json")
    return {k: orjson.dumps(v).decode() if k in _JSON else str(v) for k, v in raw.items()}


def _from_hash(raw: dict[str, str]) -> WorkerInfo:
    data = {k: orjson.loads(v) if k in _JSON else v for k, v in raw.items()}
    return WorkerInfo.model_validate(data)


async def heartbeat(redis: Redis, keys: QueueKeys, info: WorkerInfo, ttl_s: float) -> None:
    """Register or refresh a worker; its hash expires unless the next heartbeat comes."""
    key = keys.worker(info.worker_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=_to_hash(info))
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.sadd(keys.workers, info.worker_id)
        await pipe.execute()


async def deregister(redis: Redis, keys: QueueKeys, worker_id: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.worker(worker_id))
        pipe.srem(keys.workers, worker_id)
        await pipe.execute()


async def list_workers(redis: Redis, prefix: str = DEFAULT_PREFIX) -> list[WorkerInfo]:
    """Live workers of every type; ids whose hash expired (dead workers) are pruned."""
    out: list[WorkerInfo] = []
    for name in CATALOGUE:
        out += await type_workers(redis, QueueKeys(name, prefix))
    return out


async def type_workers(redis: Redis, keys: QueueKeys, prune: bool = True) -> list[WorkerInfo]:
    """Live workers of one type: those whose heartbeat hash has not expired. Ids left in the
    set by dead workers are removed from it unless ``prune`` is false (a read-only look)."""
    ids = sorted(await redis.smembers(keys.workers))
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for worker_id in ids:
            pipe.hgetall(keys.worker(worker_id))
        raws = await pipe.execute()
    dead = [w for w, raw in zip(ids, raws, strict=True) if not raw]
    if dead and prune:
        await redis.srem(keys.workers, *dead)
    return [_from_hash(raw) for raw in raws if raw]


async def publish_limits(redis: Redis, keys: QueueKeys, limits: dict[str, str]) -> None:
    """The type's maxima for a job's own max_retries, timeout_s and priority, which the submit
    and retry scripts apply (``ai:{type}:limits``; kept while the type has no worker, so jobs
    queued meanwhile are bounded too). Every worker of a type writes its own settings at start:
    give all of them the same."""
    await redis.hset(keys.limits, mapping=limits)
