"""Due retries back into their streams: the ``promote`` transition, for one worker type or all.

A retry waits out its backoff in the type's delayed set (``ai:{type}:delayed``), invisible to
XLEN. Workers promote their own type's due retries from their maintenance loop; the gateway
promotes every type's on a timer (gateway/promoter.py), so a due retry is back in its stream,
and counted by XLEN (what KEDA scales on), even while its type has no worker at all. Running
both is safe: ``promote.lua`` removes the job from the delayed set and adds its entry in one
step, so a job promoted twice at once gets one entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from schemas.records import requeue_fields_of
from schemas.status import JobKind, Priority
from streams import scripts
from streams.keys import QueueKeys
from streams.limits import StreamLimits

PROMOTE_BATCH = 100  # due retries promoted per type per call at most


async def promote_due(redis: Redis, keys: QueueKeys, limits: StreamLimits, now_ms: int,
                      limit: int = PROMOTE_BATCH) -> int:
    """Move retrying jobs of one type whose backoff passed by ``now_ms`` back into their stream;
    how many were promoted (the script checks the due time against the server's clock)."""
    due = await redis.zrangebyscore(keys.delayed, "-inf", now_ms, 0, limit)
    return await _promote(redis, keys, limits, due) if due else 0


async def promote_all_due(redis: Redis, all_keys: Iterable[QueueKeys], limits: StreamLimits,
                          limit: int = PROMOTE_BATCH) -> int:
    """``promote_due`` for many types, due by the server's clock: one round trip finds the due
    jobs of every type, then only types with some get their promote scripts."""
    all_keys = list(all_keys)
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    async with redis.pipeline(transaction=False) as pipe:
        for keys in all_keys:
            pipe.zrangebyscore(keys.delayed, "-inf", now_ms, 0, limit)
        due_by_type = await pipe.execute()
    promoted = 0
    for keys, due in zip(all_keys, due_by_type, strict=True):
        if due:
            promoted += await _promote(redis, keys, limits, due)
    return promoted


async def _promote(redis: Redis, keys: QueueKeys, limits: StreamLimits, due: list[str]) -> int:
    lanes = await _lanes(redis, keys, due)
    common = limits.common_args()
    calls = [
        (scripts.PROMOTE,
         [keys.delayed, keys.stream(kind, priority), keys.job(job_id), keys.job_events(job_id),
          keys.events],
         [*common, job_id, *requeue_fields_of(kind)])
        for job_id, (kind, priority) in zip(due, lanes, strict=True)
    ]
    results = await scripts.execute(redis, calls)
    return sum(1 for r in results if not isinstance(r, Exception) and int(r[0]) == 1)


async def _lanes(redis: Redis, keys: QueueKeys, job_ids: list[str]
                 ) -> list[tuple[JobKind, Priority]]:
    """Each job's stream: its kind and its priority lane, from its record."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), "kind", "priority")
        raw = await pipe.execute()
    return [(JobKind(kind) if kind in _KINDS else JobKind.TRAINING,
             Priority.HIGH if priority == "high" else Priority.NORMAL) for kind, priority in raw]


_KINDS = frozenset(kind.value for kind in JobKind)
