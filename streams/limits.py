"""Bounds that keep Redis memory flat. Passed down from each process's settings."""

from __future__ import annotations

from dataclasses import dataclass

from streams.scripts import Arg


@dataclass(frozen=True, slots=True)
class StreamLimits:
    job_events_maxlen: int = 1_000  # events kept per job (MAXLEN ~)
    type_events_maxlen: int = 10_000  # events kept per worker type (MAXLEN ~)
    dead_maxlen: int = 10_000  # dead letters kept per stream (MAXLEN ~)
    retention_s: int = 7 * 24 * 3600  # finished job records and their events expire after this
    idempotency_ttl_s: int = 24 * 3600
    max_queued: int = 100_000  # jobs not finished per stream (waiting + running): past it, 429

    def common_args(self) -> list[Arg]:
        """ARGV[1..3] of every script (see streams/lua/_common.lua)."""
        return [self.job_events_maxlen, self.type_events_maxlen, self.retention_s]
