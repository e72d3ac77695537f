"""What the submit script (streams/lua/submit.lua) is given and what it answers: the jobs of one
call (one stream, so one hash slot), laid out as its KEYS and ARGV, and its reply read back.

A single submit is a batch of one; a batch is grouped by worker type, one call per type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.commands import CommandRequest
from schemas.records import entry_fields_of
from schemas.requests import MAX_BATCH_JOBS, InferenceRequest, TrainingRequest
from schemas.status import COMMAND_MODEL_TYPE, JobKind, JobStatus, Priority
from streams.errors import (
    IDEMPOTENCY_CONFLICT,
    QUEUE_FULL,
    AiqError,
    IdempotencyConflict,
    QueueFull,
)
from streams.keys import GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.scripts import Arg

WRITE, CHECK = "write", "check"
NO_ROOM_CHECK = -1  # max queued for the write pass of a batch its check pass admitted
# A batch item's own fields that are not part of the request it fingerprints.
NOT_FINGERPRINTED = frozenset({"idempotency_key"})


def _dumps(value: Any) -> str:
    return "" if value is None else orjson.dumps(value).decode()


def _blank(value: int | None) -> int | str:
    """An optional number as an entry value: '' when unset (0 is a value, not unset)."""
    return "" if value is None else value


def _lane(priority: Priority) -> str:
    """The entry's ``priority``: '' for the normal lane (the entry and record stay smaller)."""
    return "" if priority is Priority.NORMAL else priority.value


def digest(kind: JobKind, fingerprint: str) -> str:
    """What an idempotency key stores of its request: a hash of the kind and the request."""
    return hashlib.sha256(f"{kind}:{fingerprint}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job ready for the submit script."""

    kind: JobKind
    worker_type: str
    job_id: str
    entry: dict[str, Any]  # the stream entry's fields but job_id, kind and attempt
    record: dict[str, Any]  # what only the record holds
    idempotency_key: str | None = None
    fingerprint: str = ""  # digest of the request; '' without a key

    @property
    def entry_names(self) -> tuple[str, ...]:
        return entry_fields_of(self.kind)

    @property
    def entry_values(self) -> list[Any]:
        fields = {"job_id": self.job_id, "kind": self.kind.value, "attempt": 1, **self.entry}
        return [fields.get(name, "") for name in self.entry_names]


def training_job(req: TrainingRequest, worker_type: str, job_id: str,
                 idempotency_key: str | None) -> NewJob:
    entry = {
        "model_type": req.model_type,
        "gpu_mem_mb": req.gpu_mem_mb or "",
        "data_path": req.data_path or "",
        "hyperparameters": req.hyperparameters.model_dump_json(),
        "timeout_s": req.timeout_s or "",
        "max_retries": _blank(req.max_retries),
        "priority": _lane(req.priority),
    }
    record = {"description": req.description, "requires_gpu": int(req.requires_gpu),
              "worker_type": worker_type}
    fingerprint = digest(JobKind.TRAINING, req.model_dump_json(exclude=set(NOT_FINGERPRINTED))) \
        if idempotency_key else ""
    return NewJob(JobKind.TRAINING, worker_type, job_id, entry, record, idempotency_key,
                  fingerprint)


def inference_job(req: InferenceRequest, model: dict[str, str], job_id: str,
                  idempotency_key: str | None) -> NewJob:
    """``model``: the trained model's record fields model_type, worker_type, requires_gpu."""
    entry = {
        "model_type": model["model_type"],
        "gpu_mem_mb": req.gpu_mem_mb or "",
        "data_path": req.data_path or "",
        "model_id": req.model_id,
        "parameters": _dumps(req.parameters),
        "timeout_s": req.timeout_s or "",
        "max_retries": _blank(req.max_retries),
        "priority": _lane(req.priority),
    }
    record = {"description": req.description,
              "requires_gpu": int(model.get("requires_gpu") or 0),
              "inputs": _dumps(req.inputs),  # stored once: in the record, not the entry
              "worker_type": model["worker_type"]}
    return NewJob(JobKind.INFERENCE, model["worker_type"], job_id, entry, record,
                  idempotency_key, inference_fingerprint(req) if idempotency_key else "")


def command_job(req: CommandRequest, worker_type: str, job_id: str,
                idempotency_key: str | None) -> NewJob:
    """A command job: its argv, requirements and env as JSON, the rest flat."""
    entry = {
        "model_type": COMMAND_MODEL_TYPE,
        "gpu_mem_mb": req.gpu_memory_mb or "",
        "entrypoint": _dumps(req.entrypoint),
        "working_dir": req.working_dir or "",
        "requirements": _dumps(req.requirements),
        "env": _dumps(req.env) if req.env else "",
        "timeout_s": req.timeout_s or "",
        "max_retries": _blank(req.max_retries),
        "priority": _lane(req.priority),
    }
    record = {"description": req.description, "requires_gpu": int(req.requires_gpu),
              "worker_type": worker_type}
    fingerprint = digest(JobKind.COMMAND, req.model_dump_json()) if idempotency_key else ""
    return NewJob(JobKind.COMMAND, worker_type, job_id, entry, record, idempotency_key,
                  fingerprint)


def inference_fingerprint(req: InferenceRequest) -> str:
    return digest(JobKind.INFERENCE, req.model_dump_json(exclude=set(NOT_FINGERPRINTED)))


def script_call(keys: QueueKeys, limits: StreamLimits, jobs: list[NewJob], mode: str,
                max_queued: int) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of one submit call: ``jobs`` all of one kind and worker type."""
    kind = jobs[0].kind
    record_names = list(jobs[0].record)
    entry_names = jobs[0].entry_names
    normal, high = keys.lanes(kind)
    script_keys = [normal, keys.events, keys.jobs, keys.stats, high, keys.limits]
    args: list[Arg] = [*limits.common_args(), GROUP, max_queued, mode, limits.idempotency_ttl_s,
                       len(entry_names), len(record_names), *entry_names, *record_names]
    for job in jobs:
        script_keys += [keys.job(job.job_id), keys.job_events(job.job_id),
                        keys.idempotency(job.idempotency_key or "-")]
        args += [job.job_id, job.fingerprint, *job.entry_values,
                 *(job.record[name] for name in record_names)]
    return script_keys, args


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the script did with one job."""

    job_id: str
    duplicate: bool
    event_id: str  # the queued event's id ('' for a duplicate, and in check mode)
    priority: Priority = Priority.NORMAL  # the lane it went to (a duplicate: not known here)


def outcomes(reply: list[Any]) -> list[Outcome]:
    """The per-job part of an accepted reply (code 0), in the order the jobs were given."""
    return [Outcome(str(reply[i + 1]), int(reply[i]) == 1, str(reply[i + 3]),
                    Priority.HIGH if reply[i + 4] == "high" else Priority.NORMAL)
            for i in range(3, len(reply), 5)]


def refusal(reply: list[Any], jobs: list[NewJob], positions: list[int]) -> AiqError | None:
    """The error of a refused call (None when accepted). ``positions``: each job's place in the
    request (0-based), which the error carries in ``items``."""
    code = int(reply[0])
    if code == IDEMPOTENCY_CONFLICT:
        i = int(reply[1]) - 1
        err: AiqError = IdempotencyConflict(
            f"Idempotency-Key {jobs[i].idempotency_key!r} was used for another request "
            f"(job {reply[2]})")
        err.items = (positions[i],)
        return err
    if code == QUEUE_FULL:
        worker_type, kind = jobs[0].worker_type, jobs[0].kind.value
        return QueueFull(f"{worker_type} holds {reply[1]} {kind} jobs not finished; {reply[2]} "
                         "more would pass its limit (MAX_QUEUED); submit again later")
    if code < 0:
        return AiqError(f"submit refused with code {code}")
    return None


def check_size(items: Sequence[object]) -> None:
    if not 1 <= len(items) <= MAX_BATCH_JOBS:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_JOBS} jobs, not {len(items)}")


def model_ready(model: dict[str, str] | None) -> bool:
    return model is not None and model["kind"] == JobKind.TRAINING.value and \
        model["status"] == JobStatus.SUCCEEDED.value


def same_key_same_request(keyed: list[tuple[str | None, str]]) -> None:
    """One Idempotency-Key twice in a batch names one job: refused when the two requests
    differ (whatever their worker types), before anything is read or written."""
    seen: dict[str, tuple[str, int]] = {}
    for i, (key, fingerprint) in enumerate(keyed):
        if key is None:
            continue
        fp, first = seen.setdefault(key, (fingerprint, i))
        if fp != fingerprint:
            error = IdempotencyConflict(f"jobs[{i}] has the Idempotency-Key {key!r} of "
                                        f"jobs[{first}] with another request")
            error.items = (i,)
            raise error


def raise_refused(replies: list[Any], per_type: dict[str, list[NewJob]],
                   where: dict[str, list[int]], written: bool) -> None:
    """Raise the first refusal of a batch's calls (or an error a call met in place)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    accepted = sum(len(js) for (wt, js), reply in zip(per_type.items(), replies, strict=True)
                   if int(reply[0]) >= 0)
    for (wt, js), reply in zip(per_type.items(), replies, strict=True):
        error = refusal(reply, js, where[wt])
        if error is None:
            continue
        if written and accepted:
            error.args = (f"{error}; the batch's {accepted} jobs of other worker types were "
                          "queued in the meantime (the key was taken between the check and "
                          "the write): submit the batch again with the same Idempotency-Keys",)
        raise error
