"""Every Redis key name aiq uses. No key string is built anywhere else.

All keys of one worker type share the hash tag ``{<worker type>}`` so every multi-key script runs
unchanged on Redis Cluster. Names follow the seed's convention, so a person guesses them::

    ai:training:{pytorch-2.1}:queue      stream of training jobs (consumer group "workers")
    ai:inference:{pytorch-2.1}:queue     stream of inference jobs
    ai:training:{pytorch-2.1}:queue:high the high-priority lane of training jobs (and
    ai:inference:{pytorch-2.1}:queue:high  of inference jobs): read before the normal lane
    ai:training:{pytorch-2.1}:dead       dead-letter stream of the training queue
    ai:{pytorch-2.1}:job:<job_id>        job record (hash)
    ai:{pytorch-2.1}:job:<job_id>:events events of one job (stream; SSE replays it; made by
                                         its first event after queued, kept EVENTS_TTL_S
                                         once it ended)
    ai:{pytorch-2.1}:job:<job_id>:result a finished job's result (succeeded) or error (failed),
                                         JSON (string; expires with the record)
    ai:{pytorch-2.1}:events              events of all jobs of the type (capped stream)
    ai:{pytorch-2.1}:jobs                job ids by creation time (sorted set)
    ai:{pytorch-2.1}:delayed             jobs waiting out a retry backoff (sorted set, due ms)
    ai:{pytorch-2.1}:workers             live worker ids (set); ai:{…}:worker:<id> their info
    ai:{pytorch-2.1}:stats               counters (hash): submitted, succeeded, fenced, …
    ai:{pytorch-2.1}:idem:<key>          Idempotency-Key of a submit (hash, expires)
    ai:{pytorch-2.1}:gpu_peaks           peak GPU MiB seen per <model_type>:<kind>:<batch_size>
    ai:{pytorch-2.1}:limits              the type's maxima for a job's own max_retries,
                                         timeout_s and priority (hash, set by its workers)
    ai:{pytorch-2.1}:declaration         what the type's workers announce (hash: its plugin's
                                         declaration as JSON, source, digest; no TTL)
    ai:worker_types                      names of the types with a declaration (set; the one
                                         key outside any type's hash tag)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.status import JobKind, Priority

GROUP = "workers"
DEFAULT_PREFIX = "ai"
HIGH_LANE_SUFFIX = ":high"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one worker type."""

    worker_type: str
    prefix: str = DEFAULT_PREFIX
    _base: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_base", f"{self.prefix}:{{{self.worker_type}}}")

    def stream(self, kind: JobKind, priority: Priority = Priority.NORMAL) -> str:
        """The stream of ``kind`` jobs of one priority lane (``:queue``, ``:queue:high``)."""
        base = f"{self.prefix}:{kind.value}:{{{self.worker_type}}}:queue"
        return base + HIGH_LANE_SUFFIX if priority is Priority.HIGH else base

    def dead(self, kind: JobKind) -> str:
        return f"{self.prefix}:{kind.value}:{{{self.worker_type}}}:dead"

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream a worker of the type reads: the high lanes first, then the normal ones
        (the order of reads, reclaim sweeps and orphan claims)."""
        return (*self.high_streams, *self.normal_streams)

    @property
    def high_streams(self) -> tuple[str, ...]:
        return tuple(self.stream(kind, Priority.HIGH) for kind in JobKind)

    @property
    def normal_streams(self) -> tuple[str, ...]:
        return tuple(self.stream(kind) for kind in JobKind)

    def lanes(self, kind: JobKind) -> tuple[str, str]:
        """The normal and the high lane of ``kind``."""
        return self.stream(kind), self.stream(kind, Priority.HIGH)

    @property
    def events(self) -> str:
        return f"{self._base}:events"

    @property
    def jobs(self) -> str:
        return f"{self._base}:jobs"

    @property
    def delayed(self) -> str:
        return f"{self._base}:delayed"

    @property
    def workers(self) -> str:
        return f"{self._base}:workers"

    @property
    def stats(self) -> str:
        return f"{self._base}:stats"

    def job(self, job_id: str) -> str:
        return f"{self._base}:job:{job_id}"

    def job_events(self, job_id: str) -> str:
        return f"{self._base}:job:{job_id}:events"

    def job_result(self, job_id: str) -> str:
        return f"{self._base}:job:{job_id}:result"

    def worker(self, worker_id: str) -> str:
        return f"{self._base}:worker:{worker_id}"

    @property
    def gpu_peaks(self) -> str:
        return f"{self._base}:gpu_peaks"

    @property
    def declaration(self) -> str:
        return f"{self._base}:declaration"

    def idempotency(self, key: str) -> str:
        return f"{self._base}:idem:{key}"

    @property
    def limits(self) -> str:
        return f"{self._base}:limits"

    def kind_of_stream(self, stream: str) -> JobKind:
        """The kind of jobs ``stream`` (either lane) holds."""
        return JobKind(stream[len(self.prefix) + 1:].split(":", 1)[0])

    @staticmethod
    def priority_of_stream(stream: str) -> Priority:
        return Priority.HIGH if stream.endswith(HIGH_LANE_SUFFIX) else Priority.NORMAL


def announced_types(prefix: str = DEFAULT_PREFIX) -> str:
    """The set of worker types whose workers announced their declaration (``declaration``)."""
    return f"{prefix}:worker_types"
