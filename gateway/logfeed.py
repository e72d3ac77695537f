"""A command job's lines for the hub's SSE followers (gateway/hub.py): its worker announces
each batch it wrote with one ``log`` notice in the type's feed; ``LogReader`` reads that batch
once (non-blocking XRANGE on the pooled client) and hands it to every follower of the job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

from streams.errors import UNAVAILABLE
from streams.events import Entry, id_after
from streams.joblogs import log_line, read_range
from streams.keys import QueueKeys

if TYPE_CHECKING:
    from gateway.hub import Hub

log = structlog.get_logger("aiq.gateway.hub")


@dataclass(frozen=True)
class LogBatch:
    """Lines of a command job's log, read once for all its followers: ``(id, data JSON)``."""

    job_id: str
    lines: list[tuple[str, str]]


def log_batch(job_id: str, entries: list[Entry]) -> LogBatch:
    return LogBatch(job_id, [(entry_id, log_line(job_id, entry_id, fields).model_dump_json())
                             for entry_id, fields in entries])


class LogReader:
    """Reads the batches a job's ``log`` notices announce, in order, one at a time, and hands
    each to every follower of the job. Notices that come while it reads widen the next read.
    A read that fails marks the followers stale: they read what they missed themselves."""

    def __init__(self, hub: Hub, keys: QueueKeys, job_id: str) -> None:
        self.hub, self.keys, self.job_id = hub, keys, job_id
        self.span: tuple[str, str] | None = None
        self.task: asyncio.Task[None] | None = None

    def want(self, first: str, last: str) -> None:
        if self.span is None:
            self.span = (first, last)
        elif id_after(last, self.span[1]):
            self.span = (self.span[0], last)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="aiq-hub-logs")

    async def _run(self) -> None:
        try:
            while self.span is not None and self.hub.job_subscriptions(self.job_id):
                (first, last), self.span = self.span, None
                try:
                    entries = await read_range(self.hub.redis, self.keys, self.job_id, first,
                                               last)
                except (*UNAVAILABLE, RedisError) as exc:
                    log.info("hub: log read deferred", job_id=self.job_id, error=str(exc))
                    for sub in self.hub.job_subscriptions(self.job_id):
                        sub.mark_stale()
                    continue
                batch = log_batch(self.job_id, entries)
                for sub in self.hub.job_subscriptions(self.job_id):
                    sub.put(batch)
        finally:
            self.hub.log_reader_done(self.job_id, self)
