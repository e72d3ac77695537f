"""Reading job events: one job's history, the type-wide feeds, and the order of stream ids.

Every event is written twice by the scripts (``_common.lua`` ``emit``): to the job's own stream
``ai:{type}:job:<id>:events`` (its ids are the SSE ids) and to the worker type's feed
``ai:{type}:events`` with one extra field, ``event_id``: the id of the same event in the job's
stream. Live readers follow the feeds; anyone who may have missed something replays the job's
stream after the last id they saw. The client must decode responses (``decode_responses=True``).

Two events are not always in the job's stream, and a replay rebuilds them from the job's record
(so a job costs no stream while it waits, and none after ``EVENTS_TTL_S``):

* ``queued`` is written to the feed only (``emit_queued``), under the id ``0-1`` that sorts before
  every real one; the record keeps its ``created_at``, ``worker_type`` and ``position``.
* the final event (``succeeded``, ``failed``, ``cancelled``), once the job's stream expired: it
  comes back under its own id (the record's ``final_event_id``) with the job's result or error
  (its result key).
  The events in between (started, progress, ...) are gone with the stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from schemas.catalogue import CATALOGUE
from schemas.records import OUTCOME_FIELDS
from schemas.status import TERMINAL_STATUSES
from streams.keys import DEFAULT_PREFIX, QueueKeys

Entry = tuple[str, dict[str, str]]  # (stream entry id, fields)
StreamId = tuple[int, int]

_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
REPLAY_PAGE = 500
QUEUED_EVENT_ID = "0-1"  # the queued event's id (streams/lua/_common.lua, emit_queued)
# Record fields a replay reads besides the events (the final event's payload only when needed).
_HEAD = ("status", "created_at", "worker_type", "position", "finished_at", "final_event_id",
         "kind")


MAX_ID_PART = 2**64 - 1  # both parts of a Redis stream id are unsigned 64-bit integers
MAX_ID = (MAX_ID_PART, MAX_ID_PART)


def parse_id(entry_id: str) -> StreamId:
    """``"<ms>-<seq>"`` (or ``"<ms>"``, seq 0) as a tuple that orders like Redis orders ids."""
    match = _ID.fullmatch(entry_id)
    if match is None:
        raise ValueError(f"not a stream id: {entry_id[:60]!r}")
    ms, seq = int(match[1]), int(match[2] or 0)
    if ms > MAX_ID_PART or seq > MAX_ID_PART:
        raise ValueError(f"not a stream id: {entry_id[:60]!r} (each part is at most {MAX_ID_PART})")
    return ms, seq


def normalize_id(entry_id: str) -> str:
    """The canonical ``"<ms>-<seq>"`` form of an id (ValueError for anything else)."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq}"


def id_after(a: str, b: str) -> bool:
    """True when id ``a`` comes strictly after id ``b`` (numeric, not string, comparison)."""
    return parse_id(a) > parse_id(b)


@dataclass(frozen=True, slots=True)
class Replay:
    """A job's events after some id, and its status read in the same round trip, before them.

    ``status`` is None when the job's record is gone (unknown or expired). When the status was
    already terminal, the terminal event was written before the read (same script), so it is in
    ``entries`` unless the reader had seen it already: nothing more will come.
    """

    entries: list[Entry]
    status: str | None
    kind: str | None = None  # the job's kind (a command job also has a log stream)

    @property
    def finished(self) -> bool:
        return self.status is None or self.status in _TERMINAL


async def _page(redis: Redis, stream: str, after: str) -> list[Entry]:
    entries: list[Entry] = await redis.xrange(stream, f"({after}", "+", count=REPLAY_PAGE)
    return entries


async def replay(redis: Redis, keys: QueueKeys, job_id: str, after: str = "0-0") -> Replay:
    """The job's events after ``after`` (exclusive), oldest first, and the job's status; the
    queued and final events rebuilt from the record where the job's stream lacks them."""
    stream, record = keys.job_events(job_id), keys.job(job_id)
    entries: list[Entry] = []
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(record, _HEAD)  # before the range: see Replay
        if parse_id(after) != MAX_ID:  # nothing can come after it (and XRANGE refuses "(max")
            pipe.xrange(stream, f"({normalize_id(after)}", "+", count=REPLAY_PAGE)
        head_values, *ranged = await pipe.execute()
    head = dict(zip(_HEAD, head_values, strict=True))
    page = entries = ranged[0] if ranged else []
    while len(page) == REPLAY_PAGE:
        page = await _page(redis, stream, entries[-1][0])
        entries += page
    status, kind = head["status"], head["kind"]
    if status is None:
        return Replay(entries=entries, status=None)
    if parse_id(after) < parse_id(QUEUED_EVENT_ID) and not (
            entries and entries[0][1].get("type") == "queued"):  # jobs from before 0-1
        entries.insert(0, _queued(job_id, head))
    if status in _TERMINAL and not any(f.get("type") in _TERMINAL for _, f in entries):
        final_id = head["final_event_id"] or f"{head['finished_at'] or 0}-0"
        if id_after(final_id, after):  # not seen yet, and its stream expired: from the record
            entries.append(await _final(redis, keys, job_id, status, final_id, head))
    return Replay(entries=entries, status=status, kind=kind)


def _queued(job_id: str, head: dict[str, str | None]) -> Entry:
    data = orjson.dumps({"position": int(head["position"] or 0),
                         "worker_type": head["worker_type"] or ""}).decode()
    return QUEUED_EVENT_ID, {"type": "queued", "job_id": job_id, "ts": head["created_at"] or "0",
                             "status": "queued", "data": data}


async def _final(redis: Redis, keys: QueueKeys, job_id: str, status: str, final_id: str,
                 head: dict[str, str | None]) -> Entry:
    """The final event as the job's stream held it (the scripts' write_final): its result or
    error from the job's result key (from the record for jobs stored before that key)."""
    field = OUTCOME_FIELDS.get(status)
    data = "{}"
    if field is not None:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.job_result(job_id))
            pipe.hget(keys.job(job_id), field)
            outcome, inline = await pipe.execute()
        data = f'{{"{field}":{outcome or inline or "null"}}}'
    return final_id, {"type": status, "job_id": job_id, "ts": head["finished_at"] or "0",
                      "status": status, "data": data}


def feed_streams(prefix: str = DEFAULT_PREFIX, worker_types: Iterable[str] | None = None
                 ) -> dict[str, str]:
    """The type-wide event feed of each worker type (default: the catalogue's): stream key ->
    worker type."""
    names = CATALOGUE if worker_types is None else worker_types
    return {QueueKeys(name, prefix).events: name for name in names}


async def feed_positions(redis: Redis, streams: list[str]) -> dict[str, str]:
    """The id of the newest entry of each feed (``0-0`` when empty or missing): where a reader
    that wants only what comes next starts. Unlike ``$``, such a position can be kept between
    XREAD calls, so nothing added in between is missed."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xrevrange(stream, "+", "-", count=1)
        newest: list[list[Entry]] = await pipe.execute()
    return {s: (last[0][0] if last else "0-0") for s, last in zip(streams, newest, strict=True)}


async def read_feeds(
    redis: Redis, positions: dict[str, str], count: int, block_ms: int
) -> list[tuple[str, str, dict[str, str]]]:
    """Entries after ``positions`` (stream -> id), blocking up to ``block_ms``; as
    ``(stream, entry id, fields)``. ``positions`` is advanced past what is returned."""
    got: list[tuple[str, list[Entry]]] | None = await redis.xread(
        positions, count=count, block=block_ms)
    out: list[tuple[str, str, dict[str, str]]] = []
    for stream, entries in got or []:
        for entry_id, fields in entries:
            out.append((stream, entry_id, fields))
        if entries:
            positions[stream] = entries[-1][0]
    return out


def job_entry(feed_id: str, fields: dict[str, Any]) -> Entry:
    """A feed entry as the job's own stream holds it: the job-stream id and its fields."""
    own = {k: v for k, v in fields.items() if k not in ("event_id", "truncated")}
    return str(fields.get("event_id") or feed_id), own
