"""The live hub: ONE Redis reader per gateway, fanned out in-process to SSE and WebSocket clients.

The hub owns one dedicated connection (named ``aiq-gateway-hub`` in CLIENT LIST) that XREADs,
blocking, the type-wide event feed of every worker type (``ai:{type}:events``), starting after
the newest entry at start-up and then from the last id seen on each feed, so a Redis restart or
a dropped connection loses nothing: the reader backs off (0.1 s doubling to 5 s) and resumes.
Each event is parsed once and handed to

* the SSE subscriptions of its job (``subscribe_job``), and
* every dashboard subscription (``subscribe_dashboard``) whose filter matches.

A periodic task also sends dashboards the workers and queues (through the pooled client, only
while a dashboard is connected). So thousands of clients cost no Redis connection each: the
gateway holds its request pool plus this one.

A command job's output lines are not events: its worker writes them to the job's log stream
and puts one small ``log`` notice per batch in the type's feed. For a job with SSE followers,
the hub then reads that batch once (non-blocking XRANGE on the pooled client, one reader task
per job so batches stay in order) and hands the lines to every follower of the job: however
many follow it, each batch costs one read, and no follower holds a connection.

Every subscription is a bounded buffer: when full, the oldest item is dropped and counted, so a
slow client never grows the gateway's memory. SSE streams recover dropped events from the job's
own stream (``stale``); dashboards are told how many they lost, and a dashboard too far behind
is cut off (``overrun``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

import orjson
import structlog
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.logfeed import LogBatch, LogReader
from gateway.settings import GatewaySettings
from schemas.events import TERMINAL_EVENTS, JobEvent, parse_event
from streams.backoff import Backoff
from streams.connection import client, slot_groups
from streams.errors import UNAVAILABLE
from streams.events import feed_positions, feed_streams, job_entry, read_feeds
from streams.inspect import queue_stats
from streams.joblogs import LOG_NOTICE, notice_range
from streams.keys import QueueKeys
from streams.registry import list_workers

log = structlog.get_logger("aiq.gateway.hub")

HUB_CLIENT_NAME = "aiq-gateway-hub"
READ_COUNT = 500
BACKOFF_S = (0.1, 5.0)
STOP_GRACE_S = 1.0

T = TypeVar("T")


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class HubEvent:
    """One job event off a feed, parsed once and serialised once for all its subscribers."""

    worker_type: str
    event: JobEvent  # ``event.id`` is the id in the job's own stream (the SSE id)

    @property
    def event_id(self) -> str:
        return self.event.id

    @property
    def job_id(self) -> str:
        return self.event.job_id

    @property
    def terminal(self) -> bool:
        return self.event.type in TERMINAL_EVENTS

    @cached_property
    def data_json(self) -> str:
        """The event as SSE ``data:`` (exactly what a replay of the job's stream gives)."""
        return dumps(self.event.model_dump(mode="json"))

    @cached_property
    def ws_text(self) -> str:
        body = {**self.event.model_dump(mode="json"), "worker_type": self.worker_type}
        return dumps({"type": "event", "event": body})


@dataclass(frozen=True)
class Notice:
    """A dashboard message that is not a job event (workers, queues): sent to every filter."""

    ws_text: str


class Subscription(Generic[T]):
    """A bounded buffer between the hub and one client; never blocks the hub.

    ``put`` drops the oldest item when full and counts it (``dropped``, reset by
    ``take_dropped``; ``dropped_total`` never reset). ``stale`` says the client may have missed
    items (a drop, or the hub reconnected). With ``max_lag``, more drops than that since the
    client last took an item mark it ``overrun``: the hub unsubscribes it.
    """

    def __init__(self, maxsize: int, max_lag: int | None = None) -> None:
        self.maxsize = maxsize
        self.max_lag = max_lag
        self.items: deque[T] = deque()
        self.dropped = 0
        self.dropped_total = 0
        self.high_water = 0
        self.stale = False
        self.overrun = False
        self.closed = False
        self._wake = asyncio.Event()

    def put(self, item: T) -> None:
        if self.closed:
            return
        if len(self.items) >= self.maxsize:
            self.items.popleft()
            self.dropped += 1
            self.dropped_total += 1
            self.stale = True
            self.overrun = self.max_lag is not None and self.dropped > self.max_lag
        self.items.append(item)
        self.high_water = max(self.high_water, len(self.items))
        self._wake.set()

    def mark_stale(self) -> None:
        self.stale = True
        self._wake.set()

    def take_stale(self) -> bool:
        stale, self.stale = self.stale, False
        return stale

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    def poke(self) -> None:
        """Wake a waiting ``get`` with nothing (the hub's heartbeat: the stream sends a ping)."""
        self._wake.set()

    async def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None after ``timeout`` s, on ``poke``, when closed, or on
        ``mark_stale``. Without a timeout no timer is armed per wait (SSE streams rely on the
        hub's heartbeat pokes instead). A wake-up that came while the client was busy (between
        two gets) is not lost: it was a lost ``mark_stale`` that left an SSE client without its
        job's large final event until the next heartbeat."""
        if not self.items and not self.closed and not self._wake.is_set():
            if timeout is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        self._wake.clear()
        return self.items.popleft() if self.items else None


@dataclass
class EventFilter:
    """What a dashboard asked for; None matches everything."""

    worker_type: str | None = None
    job_id: str | None = None

    def accepts(self, item: HubEvent | Notice) -> bool:
        if not isinstance(item, HubEvent):
            return True
        return ((self.worker_type is None or item.worker_type == self.worker_type)
                and (self.job_id is None or item.job_id == self.job_id))


class DashboardSubscription(Subscription[HubEvent | Notice]):
    def __init__(self, maxsize: int, max_lag: int) -> None:
        super().__init__(maxsize, max_lag)
        self.filter = EventFilter()

    def set_filter(self, new: EventFilter) -> None:
        """Applies to what is still buffered too."""
        self.filter = new
        self.items = deque(item for item in self.items if new.accepts(item))


class JobSubscription(Subscription[HubEvent | LogBatch]):
    def __init__(self, job_id: str, maxsize: int) -> None:
        super().__init__(maxsize)
        self.job_id = job_id


@dataclass
class _Subscribers:
    jobs: dict[str, set[JobSubscription]] = field(default_factory=dict)
    dashboards: set[DashboardSubscription] = field(default_factory=set)

    def all(self) -> list[Subscription[Any]]:
        return [*self.dashboards, *(s for subs in self.jobs.values() for s in subs)]


class Hub:
    """Start with ``start()`` inside a running loop, stop with ``await stop()``."""

    def __init__(self, settings: GatewaySettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis  # the pooled client: dashboards' periodic workers/queues reads
        self.feeds = feed_streams(settings.redis_prefix)  # stream -> worker type
        self.positions: dict[str, str] = {}
        self.ready = asyncio.Event()  # set once the start positions are known
        self._disconnected: set[int] = set()  # readers (by group index) not following now
        self._subs = _Subscribers()
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: list[asyncio.Task[None]] = []  # one per slot group of the feeds
        self._generation = 0  # readers of an older generation stop (follow)
        self._log_readers: dict[str, LogReader] = {}  # job id -> its reader (while followed)
        self._conn: Redis | None = None
        self._stopping = False
        self._closing = False

    # --- subscriptions ----------------------------------------------------------------------

    def subscribe_job(self, job_id: str) -> JobSubscription:
        sub = JobSubscription(job_id, self.settings.live_buffer_events)
        if self._closing:
            sub.close()
        self._subs.jobs.setdefault(job_id, set()).add(sub)
        return sub

    def subscribe_dashboard(self) -> DashboardSubscription:
        sub = DashboardSubscription(self.settings.live_buffer_events, self.settings.ws_max_lag)
        if self._closing:
            sub.close()
        self._subs.dashboards.add(sub)
        return sub

    def unsubscribe(self, sub: JobSubscription | DashboardSubscription) -> None:
        if isinstance(sub, DashboardSubscription):
            self._subs.dashboards.discard(sub)
            return
        subs = self._subs.jobs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs.jobs[sub.job_id]

    @property
    def dashboards(self) -> tuple[DashboardSubscription, ...]:
        return tuple(self._subs.dashboards)

    def job_subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subs.jobs.values())

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        return self.ready.is_set()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._conn = self._connect()
        self._start_readers()
        self._tasks = [asyncio.create_task(self._refresh_loop(), name="aiq-hub-refresh"),
                       asyncio.create_task(self._heartbeat_loop(), name="aiq-hub-heartbeat")]

    def _start_readers(self) -> None:
        assert self._conn is not None
        groups = slot_groups(self._conn, list(self.feeds))  # one on a single Redis
        self._readers = [asyncio.create_task(self._read_loop(group, self._generation),
                                             name="aiq-hub-reader") for group in groups]

    async def follow(self, worker_types: list[str]) -> None:
        """Follow the feeds of ``worker_types`` too (types the gateway learned while running,
        gateway/catalogue.py). Their start positions are read now, before any job of theirs
        can be accepted; the readers then restart on the wider set of feeds (SSE streams read
        their job's stream once more, as after a reconnect: nothing is lost)."""
        prefix = self.settings.redis_prefix
        added = {feed: name for feed, name in feed_streams(prefix, worker_types).items()
                 if feed not in self.feeds}
        if not added or self._stopping:
            return
        self.positions.update(await feed_positions(self.redis, list(added)))
        self.feeds = {**self.feeds, **added}
        if self._conn is None:  # not started
            return
        self._generation += 1
        readers, conn = self._readers, self._conn
        for task in readers:
            task.cancel()
        await conn.aclose()  # also ends a read that swallowed its cancellation
        await asyncio.wait(readers, timeout=STOP_GRACE_S)
        if not self._stopping:
            self._conn = self._connect()
            self._start_readers()

    @property
    def connected(self) -> bool:
        """Every reader follows its feeds (a reader that lost Redis is reconnecting)."""
        return bool(self._readers) and not self._disconnected

    async def _heartbeat_loop(self) -> None:
        """One timer for every SSE stream: each interval, poke them all; a stream with nothing
        to send writes a heartbeat comment (a per-frame timer cost more than the frame)."""
        while True:
            await asyncio.sleep(self.settings.sse_heartbeat_s)
            for subs in list(self._subs.jobs.values()):
                for sub in list(subs):
                    sub.poke()

    async def stop(self) -> None:
        self._stopping = True
        for task in (*self._readers, *self._tasks):
            task.cancel()
        pending = {*self._readers, *self._tasks}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_S)
        if self._conn is not None:  # also ends a read that swallowed its cancellation
            await self._conn.aclose()
        if pending:
            await asyncio.wait(pending, timeout=STOP_GRACE_S)
        for reader in list(self._log_readers.values()):
            if reader.task is not None:
                reader.task.cancel()
        self._tasks, self._readers, self._conn = [], [], None
        self.close_clients()
        self._subs = _Subscribers()

    def close_clients(self) -> None:
        """End every live client now (SSE streams finish, dashboards get 1001), and any that
        connects later. Call it when the server starts shutting down: uvicorn waits for open
        responses before it runs the lifespan's shutdown, so ``stop()`` alone comes too late
        for endless streams. Idempotent; call it on the event loop's thread."""
        self._closing = True
        for sub in self._subs.all():
            sub.close()

    # --- the reader -------------------------------------------------------------------------

    def _connect(self) -> Redis:
        """The hub's own client: blocking reads must not hold a pooled connection. One
        connection on a single Redis; on a cluster, one per reader (a reader per hash slot of
        the feeds, as XREAD cannot span slots), i.e. one per worker type at most."""
        block_s = self.settings.hub_block_ms / 1000
        return client(self.settings.target, max_connections=len(self.feeds),
                      client_name=HUB_CLIENT_NAME,
                      socket_connect_timeout=self.settings.redis_connect_timeout_s,
                      socket_timeout=block_s + self.settings.redis_socket_timeout_s)

    def _current(self, generation: int) -> bool:
        """Whether a reader of ``generation`` is to go on (no stop, no restart since)."""
        return not self._stopping and generation == self._generation

    async def _read_loop(self, feeds: list[str], generation: int) -> None:
        backoff, logged = Backoff(*BACKOFF_S), False
        me = id(feeds)
        self._disconnected.add(me)
        try:
            # redis-py may turn a cancellation into a ConnectionError: the loop checks too
            while self._current(generation):
                assert self._conn is not None
                try:
                    await self._follow(self._conn, feeds, me, generation)
                except (*UNAVAILABLE, RedisError) as exc:
                    if self._current(generation) and (me not in self._disconnected
                                                      or not logged):
                        log.warning("hub: redis unavailable; retrying with backoff",
                                    error=str(exc), feeds=len(feeds))
                        backoff.reset()
                        logged = True
                except Exception:  # a bug must not end every live feed of the gateway
                    log.exception("hub: reader failed; restarting it")
                self._disconnected.add(me)
                if self._current(generation):
                    await asyncio.sleep(backoff.next())
        finally:
            self._disconnected.discard(me)

    async def _follow(self, conn: Redis, feeds: list[str], me: int, generation: int) -> None:
        missing = [f for f in feeds if f not in self.positions]
        if missing:  # the first start: from the newest entries on
            self.positions.update(await feed_positions(conn, missing))
            if all(f in self.positions for f in self.feeds):
                self.ready.set()
        else:  # a reconnect, or a restart on more feeds (follow)
            await conn.xlen(feeds[0])  # a cheap keyed round trip: on a cluster, to its node
            self._resync_all()
        self._disconnected.discard(me)
        mine = {f: self.positions[f] for f in feeds}
        while self._current(generation):
            batch = await read_feeds(conn, mine, READ_COUNT, self.settings.hub_block_ms)
            self.positions.update(mine)
            for stream, entry_id, fields in batch:
                self._dispatch(self.feeds[stream], entry_id, fields)

    def _resync_all(self) -> None:
        """After a reconnect: SSE streams re-read their job's stream (cheap insurance)."""
        for subs in self._subs.jobs.values():
            for sub in subs:
                sub.mark_stale()

    def _dispatch(self, worker_type: str, feed_id: str, fields: dict[str, str]) -> None:
        if fields.get("type") == LOG_NOTICE:  # lines for SSE followers only, not dashboards
            self._log_notice(worker_type, fields)
            return
        if not self._subs.dashboards and fields.get("job_id") not in self._subs.jobs:
            return  # nobody listens: not even parsed
        event_id, own = job_entry(feed_id, fields)
        try:
            item = HubEvent(worker_type, parse_event(event_id, own))
        except (ValidationError, ValueError) as exc:
            log.warning("hub: skipping malformed event", event_id=feed_id,
                            worker_type=worker_type, error=str(exc))
            return
        big = fields.get("truncated") == "1"  # data too big for the feed: SSE streams read
        for sub in self._subs.jobs.get(item.job_id, ()):  # it from the job's own stream
            sub.mark_stale() if big else sub.put(item)
        self._to_dashboards(item)  # dashboards see the event without its large data

    def _log_notice(self, worker_type: str, fields: dict[str, str]) -> None:
        job_id = fields.get("job_id", "")
        span = notice_range(fields)
        if job_id not in self._subs.jobs or span is None:
            return
        reader = self._log_readers.get(job_id)
        if reader is None:
            keys = QueueKeys(worker_type, self.settings.redis_prefix)
            reader = self._log_readers[job_id] = LogReader(self, keys, job_id)
        reader.want(*span)

    def job_subscriptions(self, job_id: str) -> list[JobSubscription]:
        return list(self._subs.jobs.get(job_id, ()))

    def log_reader_done(self, job_id: str, reader: LogReader) -> None:
        if self._log_readers.get(job_id) is reader:
            del self._log_readers[job_id]

    def _to_dashboards(self, item: HubEvent | Notice) -> None:
        for sub in list(self._subs.dashboards):
            if sub.filter.accepts(item):
                sub.put(item)
            if sub.overrun:
                self._subs.dashboards.discard(sub)
                sub.close()

    # --- dashboards' periodic workers and queues --------------------------------------------

    async def _refresh_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.ws_refresh_s)
            if not self._subs.dashboards:
                continue
            try:
                await self._refresh()
            except (RedisError, OSError) as exc:
                log.debug("hub: workers/queues refresh skipped: %s", exc)
            except Exception:
                log.exception("hub: workers/queues refresh failed")

    async def _refresh(self) -> None:
        prefix = self.settings.redis_prefix
        queues = await queue_stats(self.redis, prefix)
        workers = await list_workers(self.redis, prefix)
        self._to_dashboards(Notice(queues_message(queues)))
        self._to_dashboards(Notice(workers_message(workers)))


def _json_list(models: list[Any]) -> list[Any]:
    return [m.model_dump(mode="json") for m in models]


def queues_message(queues: list[Any]) -> str:
    return dumps({"type": "queues", "queues": _json_list(queues)})


def workers_message(workers: list[Any]) -> str:
    return dumps({"type": "workers", "workers": _json_list(workers)})


