"""Worker registration: a hash per worker with a TTL, renewed by heartbeats, listed per type;
and each type's declaration (its framework plugin), announced by its workers for the gateways.

A declaration has no TTL: it stays while no worker of the type runs, so a gateway still accepts
jobs for a type scaled to zero. ``redis-cli SMEMBERS ai:worker_types`` lists the types,
``HGETALL ai:{<type>}:declaration`` shows one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import MutableMapping

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis

from schemas.catalogue import CATALOGUE
from schemas.plugins import FrameworkPlugin, LoadedPlugin
from schemas.workers import WorkerInfo
from streams.keys import DEFAULT_PREFIX, QueueKeys, announced_types

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


# --- declarations ----------------------------------------------------------------------------

ANNOUNCED_PREFIX = "announced by "  # the source of a plugin learned from Redis


def declaration_fields(plugin: LoadedPlugin, worker_type: str, worker_id: str
                       ) -> dict[str, str]:
    """The declaration hash of ``worker_type``: flat, readable fields, and the plugin as JSON."""
    spec = next(w for w in plugin.plugin.worker_types if w.name == worker_type)
    declaration = plugin.plugin.model_dump_json()
    digest = hashlib.sha256(f"{plugin.source}\n{declaration}".encode()).hexdigest()[:16]
    return {"worker_type": worker_type, "framework": plugin.plugin.framework,
            "device": spec.device.value, "source": plugin.source,
            "model_types": " ".join(spec.model_types), "declaration": declaration,
            "digest": digest, "announced_by": worker_id,
            "announced_at": str(int(time.time() * 1000))}


async def announce(redis: Redis, keys: QueueKeys, plugin: LoadedPlugin, worker_id: str,
                   prefix: str = DEFAULT_PREFIX, force: bool = False) -> bool:
    """Publish the declaration of ``keys.worker_type`` (at start: ``force``); on a heartbeat
    only when the one in Redis differs (deleted, or written by another version of the plugin),
    so a heartbeat costs one read. Whether it wrote."""
    fields = declaration_fields(plugin, keys.worker_type, worker_id)
    names = announced_types(prefix)
    if not force:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.declaration, "digest")
            pipe.sadd(names, keys.worker_type)  # a no-op (not even in the AOF) when there
            digest, _ = await pipe.execute()
        if digest == fields["digest"]:
            return False
    await redis.hset(keys.declaration, mapping=fields)
    await redis.sadd(names, keys.worker_type)  # after the hash: a listed type has one
    return True


def _parsed(name: str, raw: list[str | None],
            cache: MutableMapping[str, LoadedPlugin]) -> LoadedPlugin:
    """Raises ValueError when the declaration is missing or malformed."""
    source, declaration, digest = raw
    if not declaration or not digest:
        raise ValueError(f"{name}: listed, but no declaration")
    if digest in cache:
        return cache[digest]
    try:
        plugin = FrameworkPlugin.model_validate_json(declaration)
    except ValidationError as exc:
        raise ValueError(f"{name}: malformed declaration: {exc}".replace("\n", " ")[:500]
                         ) from None
    if name not in {w.name for w in plugin.worker_types}:
        raise ValueError(f"{name}: its declaration does not declare it")
    cache[digest] = found = LoadedPlugin(name, f"{ANNOUNCED_PREFIX}{source or '?'}", plugin)
    return found


async def announced(redis: Redis, prefix: str = DEFAULT_PREFIX,
                    cache: MutableMapping[str, LoadedPlugin] | None = None
                    ) -> tuple[list[LoadedPlugin], list[str]]:
    """Every announced declaration (two round trips), by worker type name, and one line per
    one that could not be read. ``cache`` (digest -> plugin) spares parsing the same one."""
    names = sorted(await redis.smembers(announced_types(prefix)))
    if not names:
        return [], []
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(QueueKeys(name, prefix).declaration, "source", "declaration", "digest")
        rows = await pipe.execute()
    found, problems = [], []
    for name, raw in zip(names, rows, strict=True):
        try:
            found.append(_parsed(name, raw, cache if cache is not None else {}))
        except ValueError as exc:
            problems.append(str(exc))
    return found, problems
