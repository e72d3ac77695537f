"""Every Redis key name aiq uses. No key string is built anywhere else.

All keys of one worker type share the hash tag ``{<worker type>}`` so every multi-key script runs
unchanged on Redis Cluster. Names follow the seed's convention, so a person guesses them::

    ai:training:{pytorch-2.1}:queue      stream of training jobs (consumer group "workers")
    ai:inference:{pytorch-2.1}:queue     stream of inference jobs
    ai:command:{pytorch-2.1}:queue       stream of command jobs (read only by workers with
                                         COMMAND_JOBS on)
    ai:training:{pytorch-2.1}:queue:high the high-priority lane of training jobs (and
    ai:inference:{pytorch-2.1}:queue:high  of inference jobs, ai:command:…:queue:high of
                                         command jobs): read before the normal lane
    ai:training:{pytorch-2.1}:dead       dead-letter stream of the training queue (one per kind)
    ai:{pytorch-2.1}:job:<job_id>        job record (hash)
    ai:{pytorch-2.1}:job:<job_id>:events events of one job (stream; SSE replays it; made by
                                         its first event after queued, kept EVENTS_TTL_S
                                         once it ended)
    ai:{pytorch-2.1}:job:<job_id>:result a finished job's result (succeeded) or error (failed),
                                         JSON (string; expires with the record)
    ai:{pytorch-2.1}:job:<job_id>:logs   a command job's stdout/stderr lines (stream, capped at
                                         LOG_MAX_LINES; expires with the job's events)
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
# The kinds every worker serves; command jobs only where COMMAND_JOBS is on.
MODEL_KINDS: tuple[JobKind, ...] = (JobKind.TRAINING, JobKind.INFERENCE)


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
        """The streams every worker of the type reads (training and inference, both lanes):
        ``streams_of(MODEL_KINDS)``. A worker with command jobs on serves the command lanes
        too."""
        return self.streams_of(MODEL_KINDS)

    def streams_of(self, kinds: tuple[JobKind, ...]) -> tuple[str, ...]:
        """The streams of ``kinds``, the set a worker serves: the high lanes first, then the
        normal ones (the order of reads, reclaim sweeps and orphan claims)."""
        return (*self.high_streams_of(kinds), *self.normal_streams_of(kinds))

    @staticmethod
    def split_lanes(streams: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``streams`` as (high lanes, normal lanes), each in order."""
        return (tuple(s for s in streams if s.endswith(HIGH_LANE_SUFFIX)),
                tuple(s for s in streams if not s.endswith(HIGH_LANE_SUFFIX)))

    def high_streams_of(self, kinds: tuple[JobKind, ...]) -> tuple[str, ...]:
        return tuple(self.stream(kind, Priority.HIGH) for kind in kinds)

    def normal_streams_of(self, kinds: tuple[JobKind, ...]) -> tuple[str, ...]:
        return tuple(self.stream(kind) for kind in kinds)

    @property
    def all_streams(self) -> tuple[str, ...]:
        """Every stream of the type, every kind and lane (a cancel looks for its job's)."""
        return self.streams_of(tuple(JobKind))

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

    def job_logs(self, job_id: str) -> str:
        return f"{self._base}:job:{job_id}:logs"

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
