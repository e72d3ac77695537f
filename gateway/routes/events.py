"""``GET /jobs/{job_id}/events``: one job's events as Server-Sent Events, resumable by id.

No gap, no duplicate: the stream subscribes to the hub for the job FIRST, then replays the job's
own events stream after ``Last-Event-ID`` (one pooled round trip), then sends live events from
the hub, skipping any at or before the last id sent. Whenever the hub may have lost something
for this client (its buffer overflowed, or the hub reconnected to Redis) the job's stream is read
again after the last id sent. Each frame's ``id:`` is the event's entry id in the job's stream;
an idle stream gets a ``: ping`` comment every ``SSE_HEARTBEAT_S``; the stream ends
``SSE_CLOSE_DELAY_S`` after a live terminal event (at once when the replay held it).

A command job also has a log stream (its output lines): they come as ``log`` events, beside its
events, from the same replay (events and lines merged by id) and the same hub (which reads each
announced batch once for all followers). Its frames' ids carry both positions,
``<event id>:<log id>`` (the last event and the last line sent so far), so ``Last-Event-ID``
resumes both exactly. Every line is written before the job's final state, and before sending
the terminal event a follower reads what lines it has not sent yet: the last line comes before
the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.background import BackgroundTask

from gateway.deps import HubDep, JobIdDep, ProducerDep, RedisDep, SettingsDep
from gateway.errors import ApiError, responses
from gateway.hub import Hub, HubEvent, JobSubscription
from gateway.logfeed import LogBatch
from gateway.settings import GatewaySettings
from schemas.events import TERMINAL_EVENTS, EventType, parse_event
from schemas.status import JobKind
from streams.errors import JobNotFound
from streams.events import Entry, Replay, id_after, normalize_id, parse_id, replay
from streams.joblogs import log_line, read_after
from streams.keys import QueueKeys

log = structlog.get_logger("aiq.gateway.sse")

router = APIRouter(prefix="/jobs", tags=["jobs"])

_ID = r"\d{1,20}(-\d{1,20})?"
EVENT_ID_PATTERN = rf"^{_ID}(:{_ID})?$"  # <event id>, or <event id>:<log id> (command jobs)
LOG_EVENT = "log"
PING = ": ping\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# One SSE event (OpenAPI before 3.2: a text/event-stream ``schema`` describes each event): the
# entry id, the event's type and the event as one line of JSON. ``: ping`` comments are no events.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": r"^\d+-\d+(:\d+-\d+)?$",
               "description": "the event's entry id in the job's stream (resume with it); for "
                              "a command job <event id>:<log id>, both positions"},
        "event": {"type": "string", "enum": [*(t.value for t in EventType), LOG_EVENT]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [{"$ref": "#/components/schemas/JobEvent"},
                                             {"$ref": "#/components/schemas/LogLine"}]},
                 "description": "the whole event, or a command job's output line (log), as "
                                "one line of JSON"},
    },
}
_SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": _SSE_EVENT}},
          "description": "`id: <entry id>` / `event: <type>` / `data: <event JSON>` frames, "
                         "`: ping` heartbeats; ends after the terminal event"},
    **responses("job_not_found", "validation_error", "redis_unavailable"),
}
_ID_DOC = ("resume after this event id (the `id:` of the last frame received; a command job's "
           "is `<event id>:<log id>`)")


def sse_frame(entry_id: str, event_type: str, data: str) -> str:
    """One SSE message. ``data`` is single-line JSON, so one ``data:`` line suffices."""
    return f"id: {entry_id}\nevent: {event_type}\ndata: {data}\n\n"


class _Follower:
    """One SSE stream's state: the last event id sent, for a command job the last log line's
    too, and whether the terminal event went out."""

    def __init__(self, hub: Hub, sub: JobSubscription, redis: Redis, keys: QueueKeys,
                 after: str, heartbeat_s: float, close_delay_s: float = 0.0,
                 log_after: str | None = None) -> None:
        self.hub, self.sub, self.redis, self.keys = hub, sub, redis, keys
        self.last_id = after
        self.log_id = log_after  # None: no log followed (not a command job)
        self.heartbeat_s = heartbeat_s
        self.close_delay_s = close_delay_s
        self.done = False

    @property
    def frame_id(self) -> str:
        return self.last_id if self.log_id is None else f"{self.last_id}:{self.log_id}"

    def _event(self, entry_id: str, fields: dict[str, str]) -> str:
        if self.done or not id_after(entry_id, self.last_id):
            return ""
        self.last_id = entry_id
        try:
            event = parse_event(entry_id, fields)
        except (ValidationError, ValueError) as exc:
            log.warning("sse: skipping malformed event", event_id=entry_id, error=str(exc))
            return ""
        data = orjson.dumps(event.model_dump(mode="json")).decode()
        self.done = event.type in TERMINAL_EVENTS
        return sse_frame(self.frame_id, event.type, data)

    def _lines(self, lines: list[tuple[str, str]]) -> str:
        """Log frames of the lines not sent yet (``(id, data JSON)``)."""
        frames = []
        for entry_id, data in lines:
            if self.done or self.log_id is None or not id_after(entry_id, self.log_id):
                continue
            self.log_id = entry_id
            frames.append(sse_frame(self.frame_id, LOG_EVENT, data))
        return "".join(frames)

    def replayed(self, entries: list[Entry], logs: list[Entry] | None = None) -> str:
        """Events and log lines merged by id, a terminal event last."""
        items = [(_terminal(f), parse_id(i), 0, i, f) for i, f in entries]
        items += [(False, parse_id(i), 1, i, f) for i, f in logs or ()]
        frames = []
        for _, _, is_log, entry_id, fields in sorted(items, key=lambda t: t[:3]):
            if is_log:
                data = log_line(self.sub.job_id, entry_id, fields).model_dump_json()
                frames.append(self._lines([(entry_id, data)]))
            else:
                frames.append(self._event(entry_id, fields))
        return "".join(frames)

    def after_replay(self, history: Replay, logs: list[Entry] | None = None) -> str:
        if history.kind == JobKind.COMMAND.value and self.log_id is None:
            self.log_id = "0-0"
        frames = self.replayed(history.entries, logs)
        self.done = self.done or history.finished  # finished: its terminal event was replayed
        return frames

    def live(self, item: HubEvent | LogBatch) -> str:
        if isinstance(item, LogBatch):
            return self._lines(item.lines)
        if self.done:
            return ""
        if not id_after(item.event_id, self.last_id):  # seen already, or resumed from an id
            self.done = item.terminal  # beyond it: the job is over all the same
            return ""
        self.last_id, self.done = item.event_id, item.terminal
        return sse_frame(self.frame_id, item.event.type, item.data_json)

    async def _logs_after(self) -> list[Entry]:
        if self.log_id is None:
            return []
        return await read_after(self.redis, self.keys, self.sub.job_id, self.log_id)

    async def resync(self) -> str | None:
        """Read the job's streams after the last ids sent (the hub may have lost something);
        None when Redis did not answer: retried on the next wake-up or heartbeat."""
        try:
            history = await replay(self.redis, self.keys, self.sub.job_id, self.last_id)
            logs = await self._logs_after() if history.kind == JobKind.COMMAND.value else []
        except (RedisError, OSError) as exc:
            log.info("sse: resync deferred", job_id=self.sub.job_id, error=str(exc))
            self.sub.stale = True
            return None
        return self.after_replay(history, logs)

    async def _before_end(self, item: HubEvent | LogBatch) -> str:
        """A command job's lines not sent yet, read before its terminal event goes out."""
        if not isinstance(item, HubEvent) or not item.terminal or self.log_id is None or \
                self.done:
            return ""
        try:
            logs = await self._logs_after()
        except (RedisError, OSError) as exc:
            log.info("sse: last log lines not read", job_id=self.sub.job_id, error=str(exc))
            return ""
        return self.replayed([], logs)

    async def next_chunk(self) -> str:
        """Everything buffered for this client, as one chunk (one write however far behind
        it is); a heartbeat comment when the hub's heartbeat woke it with nothing to send."""
        item = await self.sub.get()
        if self.sub.closed:
            return ""
        chunk = await self.resync() if self.sub.take_stale() else ""
        if chunk is None:  # a gap not yet filled: a live event now would skip it
            return PING
        parts = [chunk]
        while item is not None:
            parts += [await self._before_end(item), self.live(item)]
            item = self.sub.items.popleft() if self.sub.items and not self.done else None
        return "".join(parts) or PING

    async def stream(self, first: str) -> AsyncIterator[str]:
        try:
            if first:
                yield first
            while not self.done:
                chunk = await self.next_chunk()
                if self.sub.closed:
                    return
                yield chunk
                if self.done:
                    # The terminal event went out live; the teardown can wait a moment. Jobs
                    # that end together would otherwise have their streams' teardowns delay
                    # every other stream's events (bench/sse_fanout.py: last-second p99
                    # 95 -> 26 ms).
                    await asyncio.sleep(self.close_delay_s)
        finally:
            self.hub.unsubscribe(self.sub)


def _terminal(fields: dict[str, str]) -> bool:
    return fields.get("type") in TERMINAL_EVENTS


async def _replay_first(hub: Hub, redis: Redis, keys: QueueKeys, job_id: str, after: str,
                        log_after: str | None, settings: GatewaySettings
                        ) -> tuple[Replay, list[Entry]]:
    """The job's events after ``after`` and, for a command job, its log lines after
    ``log_after`` (read after the events: once the job's status is final, every line is in)."""
    if not await hub.wait_ready(settings.redis_socket_timeout_s):
        raise ApiError(503, "redis_unavailable", "the live event feed is not connected to "
                       "Redis yet; retry shortly", headers={"Retry-After": str(
                           settings.retry_after_s)})
    history = await replay(redis, keys, job_id, after)
    if history.status is None:  # the record expired after worker_type_of found it
        raise JobNotFound(f"no job {job_id}")
    logs: list[Entry] = []
    if history.kind == JobKind.COMMAND.value:
        logs = await read_after(redis, keys, job_id, log_after or "0-0")
    return history, logs


def split_resume(value: str) -> tuple[str, str | None]:
    """``<event id>[:<log id>]`` as its two positions (normalized; None: no log part)."""
    event, _, logs = value.partition(":")
    return normalize_id(event), normalize_id(logs) if logs else None


def _stream_id(value: str | None) -> str | None:
    """A Redis stream id, or two joined by ``:``: every part within 64 bits (ValueError: a 422
    naming the parameter)."""
    if value is not None:
        for part in value.split(":"):
            parse_id(part)
    return value


@router.get("/{job_id}/events", response_class=StreamingResponse, responses=_SSE_RESPONSES)
async def job_events(
    job_id: JobIdDep, producer: ProducerDep, redis: RedisDep, hub: HubDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Query(pattern=EVENT_ID_PATTERN,
                                               description=_ID_DOC),
                             AfterValidator(_stream_id)] = None,
    last_event_id_header: Annotated[str | None, Header(
        alias="Last-Event-ID", pattern=EVENT_ID_PATTERN,
        description=_ID_DOC + "; wins over the query parameter"),
        AfterValidator(_stream_id)] = None,
) -> StreamingResponse:
    """The job's history, then its live events, as Server-Sent Events."""
    keys = producer.keys(await producer.worker_type_of(job_id))  # unknown job: 404, no stream
    after, log_after = split_resume(last_event_id_header or last_event_id or "0-0")
    sub = hub.subscribe_job(job_id)  # before the replay: nothing falls between the two
    try:
        history, logs = await _replay_first(hub, redis, keys, job_id, after, log_after,
                                            settings)
    except BaseException:
        hub.unsubscribe(sub)
        raise
    follower = _Follower(hub, sub, redis, keys, after, settings.sse_heartbeat_s,
                         settings.sse_close_delay_s, log_after)
    first = follower.after_replay(history, logs)
    return StreamingResponse(follower.stream(first), media_type="text/event-stream",
                             headers=SSE_HEADERS,  # unsubscribes even if never iterated
                             background=BackgroundTask(_unsubscribe, hub, sub))


async def _unsubscribe(hub: Hub, sub: JobSubscription) -> None:
    hub.unsubscribe(sub)  # async: a sync background task would run in a thread
