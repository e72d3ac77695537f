"""Consumer-group operations of one worker: read, start, lease renewal, reclaim, finish, retry,
dead-letter, hand-back. Every state change is a script from ``streams/lua``; the ones a worker
does in bulk take a list and run in one pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from schemas.records import ENTRY_FIELDS, JobMessage
from schemas.status import JobKind
from streams import scripts
from streams.errors import NotOwner, raise_for
from streams.groups import ensure_groups
from streams.keys import GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.scripts import Arg


@dataclass(slots=True)
class Delivery:
    """One entry this worker read or reclaimed."""

    stream: str
    kind: JobKind
    entry_id: str
    fields: dict[str, str]
    message: JobMessage | None = None
    parse_error: str = ""
    deliveries: int = 0
    attempt: int = 1

    @property
    def job_id(self) -> str:
        return self.message.job_id if self.message else self.fields.get("job_id", "")


@dataclass(frozen=True, slots=True)
class StartOutcome:
    delivery: Delivery
    started: bool
    code: int
    detail: Any


class QueueConsumer:
    """Stream operations of consumer ``name`` on one worker type's streams."""

    def __init__(
        self,
        redis: Redis,
        keys: QueueKeys,
        name: str,
        limits: StreamLimits,
        max_deliveries: int = 5,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.limits = limits
        self.max_deliveries = max_deliveries
        self._common = limits.common_args()

    async def ensure_groups(self) -> None:
        await ensure_groups(self.redis, self.keys)

    def _delivery(self, stream: str, entry_id: str, fields: dict[str, str] | None) -> Delivery:
        d = Delivery(stream, self.keys.kind_of_stream(stream), entry_id, fields or {})
        try:
            d.message = JobMessage.from_fields(d.fields)
        except ValueError as exc:
            d.parse_error = str(exc)
        return d

    async def read(self, conn: Redis, count: int, block_ms: int) -> list[Delivery]:
        """XREADGROUP new entries from both streams on the caller's dedicated connection."""
        got = await conn.xreadgroup(
            GROUP, self.name, dict.fromkeys(self.keys.streams, ">"), count=count, block=block_ms
        )
        return [
            self._delivery(stream, entry_id, fields)
            for stream, entries in got or []
            for entry_id, fields in entries
        ]

    async def reclaim(self, count: int, min_idle_ms: int) -> list[Delivery]:
        """XAUTOCLAIM entries whose lease expired (their worker died). The delivery count goes
        up; ``start`` dead-letters entries past the limit."""
        out: list[Delivery] = []
        for stream in self.keys.streams:
            cursor = "0-0"
            while len(out) < count:
                reply = await self.redis.xautoclaim(
                    stream, GROUP, self.name, min_idle_ms, cursor, count=count - len(out)
                )
                cursor, entries = reply[0], reply[1]
                if any(fields is None for _, fields in entries):
                    await self._ack_vanished(stream)
                out += [self._delivery(stream, e, f) for e, f in entries if f is not None]
                if cursor == "0-0":
                    break
        return out

    async def _ack_vanished(self, stream: str) -> None:
        """Redis 6.2 returns nil (without the id) for a pending entry that was deleted; 7.0+
        drops it from the pending list itself. Find this consumer's pending ids that no longer
        exist and ack them, so they are not claimed again forever."""
        pending = await self.redis.xpending_range(stream, GROUP, "-", "+", 1000,
                                                  consumername=self.name)
        ids = [p["message_id"] for p in pending]
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(stream, entry_id, entry_id)
            found = await pipe.execute()
        gone = [i for i, f in zip(ids, found, strict=True) if not f]
        if gone:
            await self.redis.xack(stream, GROUP, *gone)

    def _job_keys(self, d: Delivery) -> list[str]:
        return [d.stream, self.keys.job(d.job_id), self.keys.job_events(d.job_id),
                self.keys.events]

    async def start(self, batch: list[Delivery]) -> list[StartOutcome]:
        """Take the jobs of well-formed entries (one round trip for the batch)."""
        calls = [
            (scripts.START,
             [*self._job_keys(d), self.keys.dead(d.kind), self.keys.stats,
              self.keys.jobs],
             [*self._common, d.job_id, d.entry_id, GROUP, self.name, self.max_deliveries,
              self.limits.dead_maxlen])
            for d in batch
        ]
        outcomes = []
        for d, res in zip(batch, await scripts.execute(self.redis, calls), strict=True):
            if isinstance(res, Exception):
                raise res
            code = int(res[0])
            if code == 0:
                d.deliveries, d.attempt = int(res[1]), int(res[2])
            outcomes.append(StartOutcome(d, code == 0, code, res[1]))
        return outcomes

    async def dead_letter(self, d: Delivery, reason: str) -> None:
        raw = orjson.dumps(d.fields).decode()
        code, detail = await scripts.DEAD_LETTER(
            self.redis, [d.stream, self.keys.dead(d.kind), self.keys.stats],
            [*self._common, d.entry_id, GROUP, self.name, reason[:2000], raw,
             self.limits.dead_maxlen],
        )
        raise_for(code, str(detail), f"dead-letter {d.entry_id}")

    def _owned_call(
        self, script: scripts.Script, d: Delivery, extra_keys: list[str], args: list[Arg]
    ) -> tuple[scripts.Script, list[str], list[Arg]]:
        return (script, [*self._job_keys(d), *extra_keys],
                [*self._common, d.job_id, d.entry_id, GROUP, self.name, *args])

    async def progress(self, d: Delivery, data: dict[str, Any]) -> bool:
        """Publish progress; True when a cancel was requested. Raises NotOwner when fenced."""
        script, keys, args = self._owned_call(
            scripts.PROGRESS, d, [self.keys.stats], [orjson.dumps(data).decode()])
        code, detail = await script(self.redis, keys, args)
        raise_for(code, str(detail), f"progress of {d.job_id}")
        return int(detail) == 1

    def complete_call(
        self, d: Delivery, result: dict[str, Any]
    ) -> tuple[scripts.Script, list[str], list[Arg]]:
        return self._owned_call(scripts.COMPLETE, d, [self.keys.stats, self.keys.jobs],
                                [orjson.dumps(result).decode()])

    def fail_call(
        self, d: Delivery, error: dict[str, Any]
    ) -> tuple[scripts.Script, list[str], list[Arg]]:
        return self._owned_call(scripts.FAIL, d, [self.keys.stats, self.keys.jobs],
                                [orjson.dumps(error).decode()])

    def cancel_call(self, d: Delivery) -> tuple[scripts.Script, list[str], list[Arg]]:
        return self._owned_call(scripts.CONFIRM_CANCEL, d, [self.keys.stats, self.keys.jobs],
                                [])

    def retry_call(
        self, d: Delivery, error: dict[str, Any], delay_ms: int
    ) -> tuple[scripts.Script, list[str], list[Arg]]:
        return self._owned_call(scripts.RETRY, d, [self.keys.delayed, self.keys.stats],
                                [orjson.dumps(error).decode(), delay_ms])

    def handback_call(
        self, d: Delivery, reason: str
    ) -> tuple[scripts.Script, list[str], list[Arg]]:
        return self._owned_call(scripts.HANDBACK, d, [self.keys.stats],
                                [reason, *ENTRY_FIELDS])

    async def finish(
        self, calls: list[tuple[scripts.Script, list[str], list[Arg]]]
    ) -> list[BaseException | None]:
        """Run finishing calls (complete/fail/cancel/retry/handback) in one round trip.
        Per call: None when accepted, NotOwner when fenced; connection errors raise."""
        out: list[BaseException | None] = []
        for res in await scripts.execute(self.redis, calls):
            if isinstance(res, Exception):
                raise res
            try:
                raise_for(int(res[0]), str(res[1]), "finish")
                out.append(None)
            except NotOwner as exc:
                out.append(exc)
        return out

    async def renew(self, batch: list[Delivery]) -> dict[str, int]:
        """Renew the leases of in-flight entries. Returns entry id -> 0 renewed, 1 lost,
        2 renewed and cancel requested."""
        out: dict[str, int] = {}
        for stream in self.keys.streams:
            mine = [d for d in batch if d.stream == stream]
            if not mine:
                continue
            codes = await scripts.RENEW(
                self.redis, [stream, *(self.keys.job(d.job_id) for d in mine)],
                [*self._common, GROUP, self.name, *(d.entry_id for d in mine)],
            )
            out.update({d.entry_id: int(c) for d, c in zip(mine, codes, strict=True)})
        return out

    async def promote_due(self, now_ms: int, limit: int = 100) -> int:
        """Move retrying jobs whose backoff passed back into their stream."""
        due = await self.redis.zrangebyscore(self.keys.delayed, "-inf", now_ms, 0, limit)
        if not due:
            return 0
        kinds = await self._kinds(due)
        calls = [
            (scripts.PROMOTE,
             [self.keys.delayed, self.keys.stream(kind), self.keys.job(job_id),
              self.keys.job_events(job_id), self.keys.events],
             [*self._common, job_id, *ENTRY_FIELDS])
            for job_id, kind in zip(due, kinds, strict=True)
        ]
        results = await scripts.execute(self.redis, calls)
        return sum(1 for r in results if not isinstance(r, Exception) and int(r[0]) == 1)

    async def _kinds(self, job_ids: list[str]) -> list[JobKind]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "kind")
            raw = await pipe.execute()
        return [JobKind.INFERENCE if k == "inference" else JobKind.TRAINING for k in raw]

    async def next_due_ms(self) -> int | None:
        first = await self.redis.zrange(self.keys.delayed, 0, 0, withscores=True)
        return int(first[0][1]) if first else None
