"""Consumer-group operations of one worker: read, start, lease renewal, reclaim, finish, retry,
dead-letter, hand-back. Every state change is a script from ``streams/lua``; the ones a worker
does in bulk take a list and run in one pipeline."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from schemas.records import JobMessage, requeue_fields_of
from schemas.status import Priority
from streams import scripts
from streams.delivery import Delivery
from streams.endings import (
    Complete,
    ConfirmCancel,
    Ending,
    Fail,
    Handback,
    RenewCode,
    Retry,
)
from streams.errors import NOT_OWNER, AiqError, error_for, raise_for
from streams.groups import ensure_groups
from streams.keys import GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.retries import PROMOTE_BATCH, promote_due
from streams.scripts import Arg

DEFAULT_PRIORITY_WEIGHT = 9  # high-lane entries read per normal one while both have a backlog


@dataclass(slots=True)
class ReclaimSweep:
    """One pass of XAUTOCLAIM cursors over the pending lists of a type's streams, in stream
    order, each from its oldest entry; ``done`` once every list was read to its end."""

    streams: tuple[str, ...]
    cursor: str = "0-0"
    index: int = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.streams)

    @property
    def stream(self) -> str:
        return self.streams[self.index]

    def advance(self, cursor: str) -> None:
        """Go on from ``cursor`` (XAUTOCLAIM's next start); 0-0 ends this stream's list."""
        if cursor == "0-0":
            self.index += 1
        self.cursor = cursor


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _raise_exc(res: Any) -> None:
    if isinstance(res, Exception):
        raise res


@dataclass(slots=True)
class LaneShare:
    """How many new entries the normal lanes get before the high ones at the next read: one
    per ``weight`` high-lane entries taken since the normal lanes last had their turn, so a
    high-priority backlog overtakes normal jobs without starving them. A normal lane found
    empty when its turn came owes nothing (the credit restarts)."""

    weight: int
    credit: float = 0.0

    def normal_first(self) -> int:
        return int(self.credit)

    def took(self, asked: int, normal_first: int, high: int) -> None:
        """A read asked ``asked`` normal entries first, got ``normal_first``, and ``high``."""
        self.credit = 0.0 if normal_first < asked else self.credit - normal_first
        self.credit += high / self.weight


@dataclass(frozen=True, slots=True)
class StartOutcome:
    delivery: Delivery
    started: bool
    code: int
    detail: Any


class QueueConsumer:
    """Stream operations of consumer ``name`` on the streams it serves of one worker type:
    ``streams`` (default: training and inference; a worker with command jobs on adds the
    command stream). It never reads, reclaims, claims or hands back an entry of another."""

    def __init__(
        self,
        redis: Redis,
        keys: QueueKeys,
        name: str,
        limits: StreamLimits,
        max_deliveries: int = 5,
        priority_weight: int = DEFAULT_PRIORITY_WEIGHT,
        streams: tuple[str, ...] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.limits = limits
        self.max_deliveries = max_deliveries
        self.streams: tuple[str, ...] = keys.streams if streams is None else streams
        self.high_streams, self.normal_streams = keys.split_lanes(self.streams)
        self.lanes = LaneShare(priority_weight)
        self._asked = 0  # normal entries the last read asked for first
        self._common = limits.common_args()
        self._kinds = {stream: keys.kind_of_stream(stream) for stream in self.streams}

    async def ensure_groups(self) -> None:
        await ensure_groups(self.redis, self.keys, self.streams)

    def _delivery(self, stream: str, entry_id: str, fields: dict[str, str] | None) -> Delivery:
        kind = self._kinds.get(stream) or self.keys.kind_of_stream(stream)
        d = Delivery(stream, kind, entry_id, fields or {})
        try:
            d.message = JobMessage.from_fields(d.fields)
        except ValueError as exc:
            d.parse_error = str(exc)
        return d

    async def read(self, conn: Redis, count: int, block_ms: int) -> list[Delivery]:
        """Take up to ``count`` new entries of the served streams, high lanes first
        (``read.lua``), on the caller's dedicated connection; when none waits, block up to
        ``block_ms`` for the first ones. Woken from the block, at most ``count`` // streams per
        stream (at least one each)."""
        taken = self._taken(await scripts.READ(conn, *self._read_call(count)))
        if taken or block_ms <= 0:
            return taken
        per_stream = max(1, count // len(self.streams))
        got = await conn.xreadgroup(GROUP, self.name, dict.fromkeys(self.streams, ">"),
                                    count=per_stream, block=block_ms)
        out = self._parse_read(got)
        self.lanes.took(0, 0, sum(self.keys.priority_of_stream(d.stream) is Priority.HIGH
                                  for d in out))
        return out

    def _parse_read(self, got: Any) -> list[Delivery]:
        return [
            self._delivery(stream, entry_id, fields)
            for stream, entries in got or []
            for entry_id, fields in entries
        ]

    def _read_call(self, count: int) -> tuple[list[str], list[Arg]]:
        """KEYS and ARGV of ``read.lua``: the high lanes, then the normal ones."""
        high = self.high_streams
        self._asked = self.lanes.normal_first()
        return ([*high, *self.normal_streams],
                [*self._common, GROUP, self.name, count, len(high), self._asked])

    def _taken(self, reply: list[Any]) -> list[Delivery]:
        """``read.lua``'s reply as deliveries, in the order read; the lane share updated."""
        self.lanes.took(self._asked, int(reply[0]), int(reply[1]))
        return [self._delivery(stream, entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))
                for stream, entries in zip(reply[2::2], reply[3::2], strict=True)
                for entry_id, flat in entries]

    def sweep(self) -> ReclaimSweep:
        """A new pass over the pending lists of this type's streams (see ``reclaim``)."""
        return ReclaimSweep(self.streams)

    async def reclaim(self, count: int, min_idle_ms: int, sweep: ReclaimSweep | None = None
                      ) -> list[Delivery]:
        """XAUTOCLAIM up to ``count`` entries whose lease expired (their worker died), oldest
        first, going on from where ``sweep`` stopped (a fresh pass when None). The delivery
        count goes up; ``start`` dead-letters entries past the limit."""
        sweep = sweep or self.sweep()
        out: list[Delivery] = []
        while len(out) < count and not sweep.done:
            stream = sweep.stream
            reply = await self.redis.xautoclaim(
                stream, GROUP, self.name, min_idle_ms, sweep.cursor, count=count - len(out))
            cursor, entries = reply[0], reply[1]
            if any(fields is None for _, fields in entries):
                await self._ack_vanished(stream)
            out += [self._delivery(stream, e, f) for e, f in entries if f is not None]
            sweep.advance(cursor)
        return out

    async def claim_orphans(self, count: int, min_idle_ms: int) -> list[Delivery]:
        """Claim up to ``count`` pending entries whose owner is dead by its heartbeat: a
        consumer of the group whose registry hash (``keys.worker``) has expired, so its jobs
        restart before their lease runs out. Entries must still be idle ``min_idle_ms``, and
        XCLAIM counts the delivery, so fencing is that of any reclaim: a worker that was not
        dead after all has its late writes refused. A live worker keeps its hash fresh from
        its event loop whatever its jobs do, so healthy long jobs are never taken."""
        out: list[Delivery] = []
        for stream in self.streams:
            if len(out) >= count:
                break
            summary = await self.redis.xpending(stream, GROUP)
            owners = sorted(c["name"] for c in summary.get("consumers") or ()
                            if int(c["pending"]) > 0 and c["name"] != self.name)
            if not owners:
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in owners:
                    pipe.exists(self.keys.worker(name))
                alive = await pipe.execute()
            for name in (n for n, live in zip(owners, alive, strict=True) if not live):
                pending = await self.redis.xpending_range(
                    stream, GROUP, "-", "+", count - len(out), consumername=name,
                    idle=min_idle_ms)
                ids = [p["message_id"] for p in pending]
                if not ids:
                    continue
                claimed = await self.redis.xclaim(stream, GROUP, self.name, min_idle_ms, ids)
                out += [self._delivery(stream, e, f) for e, f in claimed if f is not None]
                if len(claimed) < len(ids):  # deleted while pending (6.2 keeps them listed)
                    await self._ack_vanished(stream)
                if len(out) >= count:
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

    def _start_calls(self, batch: list[Delivery]
                     ) -> tuple[list[str], list[tuple[scripts.Script, list[str], list[Arg]]]]:
        streams = list(dict.fromkeys(d.stream for d in batch))
        calls: list[tuple[scripts.Script, list[str], list[Arg]]] = []
        for stream in streams:
            mine = [d for d in batch if d.stream == stream]
            keys = [stream, self.keys.events, self.keys.dead(mine[0].kind), self.keys.stats,
                    self.keys.jobs]
            args: list[Arg] = [*self._common, GROUP, self.name, self.max_deliveries,
                               self.limits.dead_maxlen]
            for d in mine:
                keys += [self.keys.job(d.job_id), self.keys.job_events(d.job_id)]
                args += [d.job_id, d.entry_id]
            calls.append((scripts.START, keys, args))
        return streams, calls

    def _start_outcomes(self, batch: list[Delivery], streams: list[str], results: list[Any]
                        ) -> list[StartOutcome]:
        # One reply per item in the batch's order (a duplicate entry has its own reply).
        replies: dict[int, StartOutcome] = {}
        for stream, res in zip(streams, results, strict=True):
            _raise_exc(res)
            mine = [n for n, d in enumerate(batch) if d.stream == stream]
            for n, (code, detail, attempt, *inputs) in zip(mine, res, strict=True):
                d = batch[n]
                if code == 0:
                    d.deliveries, d.attempt = int(detail), int(attempt)
                    d.take_inputs(inputs[0] if inputs else "")
                replies[n] = StartOutcome(d, code == 0, int(code), detail)
        return [replies[n] for n in range(len(batch))]

    async def start(self, batch: list[Delivery]) -> list[StartOutcome]:
        """Take the jobs of well-formed entries: one script call per stream, one round trip."""
        streams, calls = self._start_calls(batch)
        return self._start_outcomes(batch, streams, await scripts.execute(self.redis, calls))

    async def start_and_read(self, conn: Redis, batch: list[Delivery], count: int
                             ) -> tuple[list[StartOutcome], list[Delivery]]:
        """``start`` the batch and, in the same round trip, read up to ``count`` more entries
        without blocking: under load, reading and starting cost one round trip per batch."""
        streams, calls = self._start_calls(batch)
        if count > 0:
            calls.append((scripts.READ, *self._read_call(count)))
        results = await scripts.execute(conn, calls)
        more: list[Delivery] = []
        if count > 0:
            _raise_exc(results[-1])
            more = self._taken(results.pop())
        return self._start_outcomes(batch, streams, results), more

    async def dead_letter(self, d: Delivery, reason: str) -> bool:
        """Move a malformed entry to the dead-letter stream with its raw fields. False when
        the entry is not this consumer's (another worker took it meanwhile): nothing done."""
        raw = _json(d.fields)
        code, detail = await scripts.DEAD_LETTER(
            self.redis, [d.stream, self.keys.dead(d.kind), self.keys.stats],
            [*self._common, d.entry_id, GROUP, self.name, reason[:2000], raw,
             self.limits.dead_maxlen],
        )
        if code == NOT_OWNER:
            return False
        raise_for(code, str(detail), f"dead-letter {d.entry_id}")
        return True

    def _single_call(self, e: ConfirmCancel | Retry | Handback
                     ) -> tuple[scripts.Script, list[str], list[Arg]]:
        """The script call of an ending written one job per call."""
        d = e.delivery
        keys = [d.stream, self.keys.job(d.job_id), self.keys.job_events(d.job_id),
                self.keys.events]
        args: list[Arg] = [*self._common, d.job_id, d.entry_id, GROUP, self.name]
        match e:
            case ConfirmCancel():
                return scripts.CONFIRM_CANCEL, [*keys, self.keys.stats, self.keys.jobs,
                                                self.keys.job_logs(d.job_id)], args
            case Retry():
                return (scripts.RETRY, [*keys, self.keys.delayed, self.keys.stats,
                                        self.keys.job_result(d.job_id), self.keys.jobs,
                                        self.keys.job_logs(d.job_id)],
                        [*args, e.error, e.delay_ms, e.overrides])
            case Handback():
                return (scripts.HANDBACK, [*keys, self.keys.stats],
                        [*args, e.reason, *requeue_fields_of(d.kind)])

    async def progress(self, d: Delivery, data: dict[str, Any]) -> bool:
        """Publish progress; True when a cancel was requested. Raises NotOwner when fenced."""
        code, detail = await scripts.PROGRESS(
            self.redis,
            [d.stream, self.keys.job(d.job_id), self.keys.job_events(d.job_id), self.keys.events,
             self.keys.stats],
            [*self._common, d.job_id, d.entry_id, GROUP, self.name, _json(data)])
        raise_for(code, str(detail), f"progress of {d.job_id}")
        return int(detail) == 1

    async def append_log(self, d: Delivery, lines: list[tuple[str, str]], maxlen: int
                         ) -> tuple[str, str]:
        """Append a command job's output lines (``(stream, text)``, in order) to its log
        stream, capped at ``maxlen`` (``append_log.lua``); the first and last ids written.
        Raises NotOwner when fenced (another worker owns the job now)."""
        args: list[Arg] = [*self._common, d.job_id, d.entry_id, GROUP, self.name, maxlen]
        for name, text in lines:
            args += [name, text]
        reply = await scripts.APPEND_LOG(
            self.redis, [d.stream, self.keys.job_logs(d.job_id), self.keys.events,
                         self.keys.stats], args)
        raise_for(int(reply[0]), str(reply[1]), f"log of {d.job_id}")
        return str(reply[1]), str(reply[2])

    def _batched_call(self, script: scripts.Script, items: list[Complete] | list[Fail]
                      ) -> tuple[scripts.Script, list[str], list[Arg]]:
        """complete/fail of many jobs of one stream in one script call."""
        keys = [items[0].delivery.stream, self.keys.events, self.keys.stats, self.keys.jobs]
        args: list[Arg] = [*self._common, GROUP, self.name]
        for e in items:
            d = e.delivery
            keys += [self.keys.job(d.job_id), self.keys.job_events(d.job_id),
                     self.keys.job_result(d.job_id), self.keys.job_logs(d.job_id)]
            args += [d.job_id, d.entry_id, e.payload]
        return script, keys, args

    async def write_endings(self, endings: list[Ending]) -> list[AiqError | None]:
        """Write how jobs ended, all in one round trip: completions and failures batched per
        stream into one script call each, the rest one call each. Per ending: None when
        written, NotOwner when fenced, JobNotFound when the job's record is gone (its entry
        is removed); connection errors raise."""
        batches: dict[tuple[type, str], list[int]] = {}
        for n, e in enumerate(endings):
            if isinstance(e, Complete | Fail):
                batches.setdefault((type(e), e.delivery.stream), []).append(n)
        singles = [n for n, e in enumerate(endings) if not isinstance(e, Complete | Fail)]
        calls = [self._batched_call(scripts.COMPLETE if kind is Complete else scripts.FAIL,
                                    cast("list[Complete] | list[Fail]", [endings[n] for n in idx]))
                 for (kind, _), idx in batches.items()]
        calls += [self._single_call(endings[n]) for n in singles]  # type: ignore[arg-type]
        results = await scripts.execute(self.redis, calls)
        codes: dict[int, int] = {}
        for idx, res in zip(batches.values(), results, strict=False):
            _raise_exc(res)
            codes.update(zip(idx, (int(c) for c in res), strict=True))
        for n, res in zip(singles, results[len(batches):], strict=True):
            _raise_exc(res)
            codes[n] = int(res[0])
        return [error_for(codes[n], "", f"{endings[n].delivery.job_id}: final write")
                for n in range(len(endings))]

    async def wait(self, items: list[tuple[Delivery, str]]) -> list[bool | AiqError]:
        """Entries held unstarted by GPU admission, each with its reason (JSON), in one round
        trip. Per item: True when the reason changed (a ``waiting`` event was written), False
        when unchanged, or the error (NotOwner, StaleEntry) when the entry is no longer this
        worker's to hold (a StaleEntry's entry was acked and deleted)."""
        calls: list[tuple[scripts.Script, list[str], list[Arg]]] = [
            (scripts.WAIT,
             [d.stream, self.keys.job(d.job_id), self.keys.job_events(d.job_id),
              self.keys.events, self.keys.stats],
             [*self._common, d.job_id, d.entry_id, GROUP, self.name, reason])
            for d, reason in items
        ]
        out: list[bool | AiqError] = []
        for (d, _), res in zip(items, await scripts.execute(self.redis, calls), strict=True):
            _raise_exc(res)
            code, detail = int(res[0]), res[1]
            err = error_for(code, str(detail), f"wait of {d.job_id}")
            out.append(err if err is not None else code == 1)
        return out

    async def renew(self, batch: list[Delivery]) -> dict[str, RenewCode]:
        """Renew the leases of in-flight entries: entry id -> what ``renew.lua`` answered."""
        out: dict[str, RenewCode] = {}
        for stream in self.streams:
            mine = [d for d in batch if d.stream == stream]
            if not mine:
                continue
            codes = await scripts.RENEW(
                self.redis, [stream, *(self.keys.job(d.job_id) for d in mine)],
                [*self._common, GROUP, self.name, *(d.entry_id for d in mine)],
            )
            out.update({d.entry_id: RenewCode(int(c)) for d, c in zip(mine, codes, strict=True)})
        return out

    async def cancel_requested(self, batch: list[Delivery]) -> list[bool]:
        """Whether a cancel was requested for each job (one pipelined round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in batch:
                pipe.hget(self.keys.job(d.job_id), "cancel_requested")
            flags = await pipe.execute()
        return [flag == "1" for flag in flags]

    async def promote_due(self, now_ms: int, limit: int = PROMOTE_BATCH) -> int:
        """Move this type's retrying jobs whose backoff passed back into their stream
        (``streams.retries.promote_due``, which the gateway runs for every type too)."""
        return await promote_due(self.redis, self.keys, self.limits, now_ms, limit)

    async def gone_consumers(self, idle_ms: int) -> list[str]:
        """Consumers of the group that hold nothing, have not read for ``idle_ms`` and whose
        worker has no live heartbeat: workers that stopped or died. A live worker reads at
        least every BLOCK_MS, so its idle time stays small."""
        names: set[str] = set()
        for stream in self.streams:
            try:
                infos = await self.redis.xinfo_consumers(stream, GROUP)
            except ResponseError:  # no stream or group yet
                continue
            names |= {c["name"] for c in infos
                      if int(c["pending"]) == 0 and int(c["idle"]) > idle_ms}
        names.discard(self.name)
        candidates = sorted(names)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in candidates:
                pipe.exists(self.keys.worker(name))
            alive = await pipe.execute()
        return [n for n, live in zip(candidates, alive, strict=True) if not live]

    async def forget(self, names: list[str]) -> int:
        """Remove these consumers from the group where they hold nothing; how many went."""
        if not names:
            return 0
        removed = 0
        for stream in self.streams:
            with contextlib.suppress(ResponseError):  # no stream or group yet
                res = await scripts.FORGET_CONSUMER(self.redis, [stream],
                                                    [*self._common, GROUP, *names])
                removed += sum(int(r) for r in res)
        return removed

    async def is_empty(self) -> bool:
        """No entry in the type's streams (waiting or pending: acked entries are deleted) and
        no job waiting out a retry backoff."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xlen(stream)
            pipe.zcard(self.keys.delayed)
            counts = await pipe.execute()
        return not any(counts)

    async def next_due_ms(self) -> int | None:
        first = await self.redis.zrange(self.keys.delayed, 0, 0, withscores=True)
        return int(first[0][1]) if first else None
