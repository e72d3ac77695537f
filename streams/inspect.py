"""Read-only queue inspection (``GET /queues``, dashboards, the CLI): one pipelined round trip.

Per worker type and kind (the two priority lanes of a kind, ``:queue`` and ``:queue:high``,
summed):

* ``length``: XLEN. Acked entries are deleted, so the stream holds exactly the jobs not finished.
* ``high_priority``: of those, how many are in the high-priority lane.
* ``pending``: delivered, not yet acked (XPENDING summary count): jobs a worker holds.
* ``lag``: ``length - pending``, the entries no worker has read yet. Exact because acked entries
  leave the stream, and it works on Redis 6.2, whose XINFO GROUPS has no lag field.
* ``oldest_pending_age_ms``: ms from the oldest pending entry's id timestamp (when it was added
  to the stream; a retried job gets a fresh entry) to the Redis server's TIME. Not the XPENDING
  idle time, which lease renewal resets every few seconds. ``None`` when nothing is pending.
* ``consumers``: consumers of the group (XINFO GROUPS), 0 before any worker created it: the
  live workers, since a stopping worker removes its own and a reclaim sweep removes those of
  gone workers once they hold nothing (``forget_consumer.lua``).
* ``dead_letters``: XLEN of the stream's dead-letter stream.
* ``delayed``: jobs of the worker type waiting out a retry backoff (ZCARD of its delayed set).
  The set is shared by every kind, so it is reported on the training row; the others say 0.

A stream or group that does not exist yet reads as zeros, never as an error. The client must
decode responses (``decode_responses=True``).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from schemas.catalogue import CATALOGUE
from schemas.status import JobKind
from schemas.workers import StreamInfo
from streams.keys import DEFAULT_PREFIX, GROUP, QueueKeys
from streams.scripts import queue_server_time

_PER_ROW = 8  # commands queued per row (a kind's two lanes); keep in step with _queue_row / _row


def or_default(value: Any, default: Any) -> Any:
    """``default`` for a missing stream or group; other server errors propagate."""
    if isinstance(value, ResponseError):
        text = str(value)
        if "no such key" in text or "NOGROUP" in text:
            return default
        raise value
    return value


def _queue_row(pipe: Any, keys: QueueKeys, kind: JobKind) -> None:
    for stream in keys.lanes(kind):
        pipe.xlen(stream)
        pipe.xpending(stream, GROUP)
        pipe.xinfo_groups(stream)
    pipe.xlen(keys.dead(kind))
    pipe.zcard(keys.delayed)


def _age_ms(oldest_id: str | None, now_ms: int) -> int | None:
    if not oldest_id:
        return None
    return max(now_ms - int(oldest_id.split("-", 1)[0]), 0)


def _oldest(*ids: str | None) -> str | None:
    """The smallest of stream entry ids (the oldest), None when there is none."""
    found = [i for i in ids if i]
    return min(found, key=lambda i: tuple(int(p) for p in i.split("-", 1))) if found else None


def _row(keys: QueueKeys, kind: JobKind, results: list[Any], now_ms: int) -> StreamInfo:
    defaults: tuple[Any, ...] = (0, {}, [], 0, {}, [], 0, 0)
    (length, summary, groups, high_length, high_summary, _, dead, delayed) = (
        or_default(r, d) for r, d in zip(results, defaults, strict=True))
    pending = int(summary.get("pending") or 0)
    high_pending = int(high_summary.get("pending") or 0)
    group: dict[str, Any] = next((g for g in groups if g.get("name") == GROUP), {})
    total = int(length) + int(high_length)
    oldest = _oldest(summary.get("min") if pending else None,
                     high_summary.get("min") if high_pending else None)
    return StreamInfo(
        stream=keys.stream(kind),
        worker_type=keys.worker_type,
        kind=kind.value,
        length=total,
        pending=pending + high_pending,
        lag=max(total - pending - high_pending, 0),
        oldest_pending_age_ms=_age_ms(oldest, now_ms),
        consumers=int(group.get("consumers") or 0),
        dead_letters=int(dead),
        delayed=int(delayed) if kind is JobKind.TRAINING else 0,
        high_priority=int(high_length),
    )


async def queue_stats(redis: Redis, prefix: str = DEFAULT_PREFIX) -> list[StreamInfo]:
    """One row per worker type and kind, in catalogue order (training first)."""
    rows = [(QueueKeys(name, prefix), kind) for name in CATALOGUE for kind in JobKind]
    async with redis.pipeline(transaction=False) as pipe:
        queue_server_time(pipe)
        for keys, kind in rows:
            _queue_row(pipe, keys, kind)
        results = await pipe.execute(raise_on_error=False)
    seconds, micros = or_default(results[0], (0, 0))
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return [
        _row(keys, kind, results[1 + i * _PER_ROW:1 + (i + 1) * _PER_ROW], now_ms)
        for i, (keys, kind) in enumerate(rows)
    ]
