"""Bounds that keep Redis memory flat. Passed down from each process's settings."""

from __future__ import annotations

from dataclasses import dataclass

from streams.scripts import Arg


@dataclass(frozen=True, slots=True)
class StreamLimits:
    job_events_maxlen: int = 1_000  # events kept per job (MAXLEN ~)
    type_events_maxlen: int = 10_000  # events kept per worker type (MAXLEN ~)
    dead_maxlen: int = 10_000  # dead letters kept per stream (MAXLEN ~)
    retention_s: int = 7 * 24 * 3600  # RESULT_TTL_S: a finished job's record expires after this
    events_ttl_s: int = 3600  # EVENTS_TTL_S: its events stream, after this (capped at the above)
    idempotency_ttl_s: int = 24 * 3600
    max_queued: int = 100_000  # jobs not finished per stream (waiting + running): past it, 429

    def common_args(self) -> list[Arg]:
        """ARGV[1..3] of every script (see streams/lua/_common.lua)."""
        return [self.job_events_maxlen, self.type_events_maxlen, self.ttls]

    @property
    def ttls(self) -> str:
        """``"<result ttl>:<events ttl>"`` (ARGV[3]); the events TTL never exceeds the result
        TTL: a job's events outliving its record could not be replayed (no status)."""
        return f"{self.retention_s}:{min(self.events_ttl_s, self.retention_s)}"
