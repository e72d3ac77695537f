"""One read of every number the gateway's ``/metrics`` exports, cheap at any queue size.

Two pipelined round trips, whatever is queued: first, per worker type, a fixed twenty-four
commands (per kind (training, inference, command) and priority lane: XLEN of the stream, the
XPENDING summary, XINFO CONSUMERS; per kind, XLEN of its dead letters; then ZCARD of the
delayed set, HGETALL of the stats hash, SMEMBERS of the registry) plus one TIME; then, per
worker type that has registered ids, one EXISTS over its workers' hashes (a dead worker's hash
expired, so only live ones count). No command reads a job or an entry, so 100,000 queued jobs
cost what 10 do (XINFO CONSUMERS answers one row per consumer: the live workers and those gone
recently, before a reclaim sweep forgets them). Every key comes from streams/keys.py; a stream,
group or key that does not exist yet reads as zero.

The stats hash (written by the Lua scripts, ``count`` in ``_common.lua``) holds each counter per
worker type (``succeeded``) and per kind (``training:succeeded``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from schemas.catalogue import CATALOGUE
from schemas.status import JobKind
from streams.inspect import or_default
from streams.keys import DEFAULT_PREFIX, GROUP, QueueKeys
from streams.scripts import queue_server_time

# Counters of the stats hash kept per kind: what became of jobs (``aiq_jobs_total``'s outcome).
OUTCOMES = ("succeeded", "failed", "cancelled", "retried", "dead_lettered", "handed_back")
SUBMITTED = "submitted"
FENCED = "fenced"  # kept per worker type only (a zombie's write may not know its stream)

_PER_KIND = 7  # commands per kind (3 per lane, dead letters); keep in step with _queue, _kind_row
_PER_TYPE = len(JobKind) * _PER_KIND + 3


@dataclass(frozen=True, slots=True)
class StreamNumbers:
    """One worker type's jobs of one kind: both priority lanes, summed."""

    kind: str
    length: int  # entries not finished (acked entries are deleted)
    pending: int  # delivered, not yet acked
    oldest_pending_age_s: float | None  # from the oldest pending entry's id to Redis's TIME
    # How long the most silent consumer that holds pending entries has not read nor renewed
    # (XINFO CONSUMERS idle; renewal is an XCLAIM, so a live worker's stays under a third of
    # the lease): past LEASE_TIMEOUT_S its entries wait to be reclaimed. None: none pending.
    owner_idle_s: float | None
    dead_letters: int
    counters: dict[str, int]  # outcome (and "submitted") -> count, for jobs of this kind
    high: int = 0  # of length, the jobs in the high-priority lane


@dataclass(frozen=True, slots=True)
class TypeNumbers:
    worker_type: str
    streams: list[StreamNumbers]
    delayed: int  # retries waiting out their backoff (one set for every kind)
    workers: int  # live workers (registry hashes that have not expired)
    fenced: int  # late writes of zombies, rejected


def _queue(pipe: Any, keys: QueueKeys) -> None:
    for kind in JobKind:
        for stream in keys.lanes(kind):
            pipe.xlen(stream)
            pipe.xpending(stream, GROUP)
            pipe.xinfo_consumers(stream, GROUP)
        pipe.xlen(keys.dead(kind))
    pipe.zcard(keys.delayed)
    pipe.hgetall(keys.stats)
    pipe.smembers(keys.workers)


def _counter(stats: dict[str, str], name: str) -> int:
    try:
        return int(stats.get(name) or 0)
    except ValueError:  # edited by hand into something else: not a count
        return 0


def _lane(results: list[Any]) -> tuple[int, int, str | None, list[int]]:
    """One lane's length, pending count, oldest pending id and its owners' idle times (ms)."""
    length, summary, consumers = (
        or_default(r, d) for r, d in zip(results, (0, {}, []), strict=True))
    pending = int(summary.get("pending") or 0)
    idle = [int(c.get("idle") or 0) for c in consumers if int(c.get("pending") or 0)]
    return int(length), pending, str(summary.get("min")) if pending else None, idle


def _kind_row(kind: JobKind, results: list[Any], stats: dict[str, str], now_ms: int
              ) -> StreamNumbers:
    normal, high = _lane(results[0:3]), _lane(results[3:6])
    dead = or_default(results[6], 0)
    ages = [max(now_ms - int(oldest.split("-", 1)[0]), 0) / 1000
            for oldest in (normal[2], high[2]) if oldest]
    idle = normal[3] + high[3]
    counters = {name: _counter(stats, f"{kind.value}:{name}") for name in (*OUTCOMES, SUBMITTED)}
    return StreamNumbers(kind.value, normal[0] + high[0], normal[1] + high[1],
                         max(ages) if ages else None, max(idle) / 1000 if idle else None,
                         int(dead), counters, high[0])


def _type_row(keys: QueueKeys, results: list[Any], now_ms: int
              ) -> tuple[TypeNumbers, list[str]]:
    """The type's numbers (workers not counted yet) and its registered worker ids."""
    delayed, stats, ids = (or_default(r, d) for r, d in
                           zip(results[len(JobKind) * _PER_KIND:], (0, {}, set()),
                                   strict=True))
    rows = [_kind_row(kind, results[i * _PER_KIND:(i + 1) * _PER_KIND], stats, now_ms)
            for i, kind in enumerate(JobKind)]
    return TypeNumbers(keys.worker_type, rows, int(delayed), 0, _counter(stats, FENCED)), \
        sorted(ids)


async def read_numbers(redis: Redis, prefix: str = DEFAULT_PREFIX,
                       worker_types: Iterable[str] | None = None) -> list[TypeNumbers]:
    """The numbers of every worker type (default: the catalogue's, in its order). Raises what
    Redis raises when it cannot answer (the caller reports Redis down). The client must decode
    responses."""
    all_keys = [QueueKeys(name, prefix) for name in (worker_types or CATALOGUE)]
    async with redis.pipeline(transaction=False) as pipe:
        queue_server_time(pipe)
        for keys in all_keys:
            _queue(pipe, keys)
        results = await pipe.execute(raise_on_error=False)
    seconds, micros = or_default(results[0], (0, 0))
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    rows = [_type_row(keys, results[1 + i * _PER_TYPE:1 + (i + 1) * _PER_TYPE], now_ms)
            for i, keys in enumerate(all_keys)]
    return await _count_live(redis, all_keys, rows)


async def _count_live(redis: Redis, all_keys: list[QueueKeys],
                      rows: list[tuple[TypeNumbers, list[str]]]) -> list[TypeNumbers]:
    """Registry ids whose hash still exists: one EXISTS per worker type that has any (its
    workers' hashes share its hash tag, so it is one slot on Redis Cluster too)."""
    asked = [(keys, row, ids) for keys, (row, ids) in zip(all_keys, rows, strict=True) if ids]
    live: dict[str, int] = {}
    if asked:
        async with redis.pipeline(transaction=False) as pipe:
            for keys, _, ids in asked:
                pipe.exists(*(keys.worker(w) for w in ids))
            counts = await pipe.execute()
        live = {row.worker_type: int(n) for (_, row, _), n in zip(asked, counts, strict=True)}
    return [replace(row, workers=live.get(row.worker_type, 0)) for row, _ in rows]
