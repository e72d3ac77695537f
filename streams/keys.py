"""Every Redis key name aiq uses. No key string is built anywhere else.

All keys of one worker type share the hash tag ``{<worker type>}`` so every multi-key script runs
unchanged on Redis Cluster. Names follow the seed's convention, so a person guesses them::

    ai:training:{pytorch-2.1}:queue      stream of training jobs (consumer group "workers")
    ai:inference:{pytorch-2.1}:queue     stream of inference jobs
    ai:command:{pytorch-2.1}:queue       stream of command jobs (read only by workers with
                                         COMMAND_JOBS on)
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
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.status import JobKind

GROUP = "workers"
_TRAINING, _INFERENCE, _COMMAND = JobKind.TRAINING, JobKind.INFERENCE, JobKind.COMMAND
DEFAULT_PREFIX = "ai"
# The kinds every worker serves; command jobs only where COMMAND_JOBS is on.
MODEL_KINDS: tuple[JobKind, ...] = (_TRAINING, _INFERENCE)


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one worker type."""

    worker_type: str
    prefix: str = DEFAULT_PREFIX
    _base: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_base", f"{self.prefix}:{{{self.worker_type}}}")

    def stream(self, kind: JobKind) -> str:
        return f"{self.prefix}:{kind.value}:{{{self.worker_type}}}:queue"

    def dead(self, kind: JobKind) -> str:
        return f"{self.prefix}:{kind.value}:{{{self.worker_type}}}:dead"

    @property
    def streams(self) -> tuple[str, str]:
        """The training and inference streams (what every worker of the type reads)."""
        return self.stream(JobKind.TRAINING), self.stream(JobKind.INFERENCE)

    def streams_of(self, kinds: tuple[JobKind, ...]) -> tuple[str, ...]:
        """The streams of ``kinds``, in that order: the set a worker serves."""
        return tuple(self.stream(kind) for kind in kinds)

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

    def idempotency(self, key: str) -> str:
        return f"{self._base}:idem:{key}"

    def kind_of_stream(self, stream: str) -> JobKind:
        if stream == self.stream(_TRAINING):
            return _TRAINING
        return _COMMAND if stream == self.stream(_COMMAND) else _INFERENCE
