"""Reading a command job's log: the stream ``ai:{type}:job:<id>:logs`` (streams/keys.py) that
its worker appends to (``append_log.lua``), one entry per output line with the fields
``stream`` (``stdout``, ``stderr``, or ``aiq``: the worker's own notes) and ``line``. Entry ids
are the lines' positions: resume after one with ``after``. The stream keeps about
``LOG_MAX_LINES`` lines (MAXLEN ~): a reader further behind than that misses the oldest.

Live readers are told of new lines by a ``log`` notice in the type's feed (one per written
batch, ``{first, last, lines}``), then read the lines here without blocking. The client must
decode responses (``decode_responses=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from schemas.events import LogLine
from schemas.status import TERMINAL_STATUSES
from streams.events import MAX_ID, Entry, normalize_id, parse_id
from streams.keys import QueueKeys

LOG_NOTICE = "log"  # the notice's ``type`` in the type's feed (not an event of the job)
PAGE = 1000
_TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)


def log_line(job_id: str, entry_id: str, fields: dict[str, str]) -> LogLine:
    return LogLine(job_id=job_id, id=entry_id, ts=parse_id(entry_id)[0],
                   stream=fields.get("stream", "stdout"), line=fields.get("line", ""))


def notice_range(fields: dict[str, str]) -> tuple[str, str] | None:
    """The ids of the batch a ``log`` notice announces (None when it is unreadable)."""
    try:
        data = orjson.loads(fields.get("data") or "{}")
        return normalize_id(str(data["first"])), normalize_id(str(data["last"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


async def read_range(redis: Redis, keys: QueueKeys, job_id: str, first: str, last: str
                     ) -> list[Entry]:
    """The lines from ``first`` to ``last`` (inclusive), in pages."""
    stream, out = keys.job_logs(job_id), list[Entry]()
    start = first
    while True:
        page: list[Entry] = await redis.xrange(stream, start, last, count=PAGE)
        out += page
        if len(page) < PAGE:
            return out
        start = f"({page[-1][0]}"


async def read_after(redis: Redis, keys: QueueKeys, job_id: str, after: str = "0-0",
                     limit: int | None = None) -> list[Entry]:
    """The lines after ``after`` (exclusive): at most ``limit``, or all there are."""
    stream, out = keys.job_logs(job_id), list[Entry]()
    if parse_id(after) == MAX_ID:
        return out
    start = f"({normalize_id(after)}"
    while limit is None or len(out) < limit:
        want = PAGE if limit is None else min(PAGE, limit - len(out))
        page: list[Entry] = await redis.xrange(stream, start, "+", count=want)
        out += page
        if len(page) < want:
            break
        start = f"({page[-1][0]}"
    return out


@dataclass(frozen=True, slots=True)
class LogPage:
    lines: list[Entry]
    status: str | None  # the job's status, read before the lines (None: no such job)

    @property
    def finished(self) -> bool:
        """The job ended before the read: no line can come after these (its worker writes
        every line before the job's final state)."""
        return self.status is None or self.status in _TERMINAL


async def read_page(redis: Redis, keys: QueueKeys, job_id: str, after: str, limit: int
                    ) -> LogPage:
    """A page of the job's lines after ``after`` and its status, read first in one round trip
    (a status already final means the page holds the last lines, unless it is full)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.job(job_id), "status")
        if parse_id(after) != MAX_ID:  # nothing can come after it (and XRANGE refuses "(max")
            pipe.xrange(keys.job_logs(job_id), f"({normalize_id(after)}", "+", count=limit)
        status, *lines = await pipe.execute()
    return LogPage(lines=lines[0] if lines else [], status=status)
