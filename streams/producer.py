"""Submitting, finding, listing, cancelling and awaiting jobs (the client side of the queue)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from schemas.catalogue import CATALOGUE, route
from schemas.events import TERMINAL_EVENTS, JobEvent, parse_event
from schemas.records import ENTRY_FIELDS, JobRecord, JobSubmitted
from schemas.requests import InferenceRequest, TrainingRequest
from schemas.status import JobKind, JobStatus
from streams import scripts
from streams.connection import connection_options, on_one_connection
from streams.errors import (
    QUEUE_FULL,
    IdempotencyConflict,
    JobCancelled,
    JobFailed,
    JobNotFound,
    ModelNotReady,
    NotReplicated,
    QueueFull,
    raise_for,
)
from streams.events import replay
from streams.groups import ensure_groups
from streams.keys import DEFAULT_PREFIX, GROUP, QueueKeys
from streams.limits import StreamLimits

_TYPE_CACHE = 10_000
LIST_SCAN = 2_000  # newest jobs a listing reads at most (GET /jobs)
# Blocking reads wait in slices of at most this, and at most half the client's socket timeout
# (redis-py's default: 5 s), which would otherwise cut a long wait short. A slice that ends
# empty costs one record lookup.
_BLOCK_SLICE_MS = 2_000


def new_job_id() -> str:
    return f"job_{uuid.uuid4()}"


def _dumps(value: Any) -> str:
    return "" if value is None else orjson.dumps(value).decode()


class Producer:
    """Client of the queue. Safe to share across tasks of one event loop."""

    def __init__(
        self, redis: Redis, limits: StreamLimits | None = None, prefix: str = DEFAULT_PREFIX,
        wait_replicas: int = 0, wait_timeout_ms: int = 1000,
    ) -> None:
        """``wait_replicas`` > 0: durable submit. A submit returns only once that many replicas
        have the job (WAIT on the submit's own connection, up to ``wait_timeout_ms``), else it
        raises ``NotReplicated``; a failover can then no longer lose an accepted job."""
        self.redis = redis
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.limits = limits or StreamLimits()
        self.prefix = prefix
        self._grouped: set[str] = set()
        self._types: OrderedDict[str, str] = OrderedDict()  # job id -> worker type (LRU)
        self._seen: dict[str, str] = {}  # job id -> its queued event's id
        timeout = connection_options(redis).get("socket_timeout", 5.0)
        self._slice_ms = _BLOCK_SLICE_MS if timeout is None else \
            max(10, min(_BLOCK_SLICE_MS, int(timeout * 500)))

    def keys(self, worker_type: str) -> QueueKeys:
        return QueueKeys(worker_type, self.prefix)

    async def submit_training(
        self, req: TrainingRequest, idempotency_key: str | None = None
    ) -> JobSubmitted:
        worker_type = route(req.model_type, req.requires_gpu, req.framework_override)
        entry = {
            "model_type": req.model_type,
            "gpu_mem_mb": req.gpu_mem_mb or "",
            "data_path": req.data_path or "",
            "hyperparameters": _dumps(req.hyperparameters.model_dump(mode="json")),
            "timeout_s": req.timeout_s or "",
        }
        record = {"description": req.description, "requires_gpu": int(req.requires_gpu)}
        fingerprint = req.model_dump_json() if idempotency_key else ""
        return await self._submit(JobKind.TRAINING, worker_type, entry, record, fingerprint,
                                  idempotency_key)

    async def submit_inference(
        self, req: InferenceRequest, idempotency_key: str | None = None
    ) -> JobSubmitted:
        # A retry gets its first job while the key lives, even once the model's record expired.
        if idempotency_key:
            earlier = await self._earlier(JobKind.INFERENCE, req.model_dump_json(),
                                          idempotency_key)
            if earlier is not None:
                return earlier
        model = await self.get(req.model_id)
        if model.kind is not JobKind.TRAINING:
            raise ModelNotReady(f"{req.model_id} is an inference job, not a trained model")
        if model.status is not JobStatus.SUCCEEDED:
            raise ModelNotReady(f"model {req.model_id} is {model.status.value}, not succeeded")
        entry = {
            "model_type": model.model_type,
            "gpu_mem_mb": req.gpu_mem_mb or "",
            "data_path": req.data_path or "",
            "model_id": req.model_id,
            "parameters": _dumps(req.parameters),
            "timeout_s": req.timeout_s or "",
        }
        record = {"description": req.description,
                  "requires_gpu": int(model.requires_gpu),
                  "inputs": _dumps(req.inputs)}  # stored once: in the record, not the entry
        return await self._submit(JobKind.INFERENCE, model.worker_type, entry, record,
                                  req.model_dump_json(), idempotency_key)

    async def _submit(
        self,
        kind: JobKind,
        worker_type: str,
        entry: dict[str, Any],
        record: dict[str, Any],
        fingerprint: str,
        idempotency_key: str | None,
    ) -> JobSubmitted:
        keys = self.keys(worker_type)
        if worker_type not in self._grouped:
            await ensure_groups(self.redis, keys)
            self._grouped.add(worker_type)
        job_id = new_job_id()
        fields = {"job_id": job_id, "kind": kind.value, "attempt": 1, **entry}
        pairs = [x for name in ENTRY_FIELDS for x in (name, fields.get(name, ""))]
        extra = [x for kv in {**record, "worker_type": worker_type}.items() for x in kv]
        idem_key = keys.idempotency(idempotency_key or "-")
        digest = self._digest(kind, fingerprint) if fingerprint else ""
        ttl = self.limits.idempotency_ttl_s if idempotency_key else 0
        stream = keys.stream(kind)
        script_keys = [stream, keys.job(job_id), keys.job_events(job_id), keys.events,
                       keys.jobs, idem_key, keys.stats]
        script_args: list[scripts.Arg] = [
            *self.limits.common_args(), job_id, ttl, digest, GROUP, self.limits.max_queued,
            len(ENTRY_FIELDS), *pairs, *extra]
        acked = None
        if self.wait_replicas:
            reply, acked = await self._submit_and_wait(script_keys, script_args)
        else:
            reply = await scripts.SUBMIT(self.redis, script_keys, script_args)
        code, got_id, *rest = reply
        if code == QUEUE_FULL:
            raise QueueFull(f"{worker_type} holds {got_id} {kind.value} jobs not finished, "
                            f"its limit (MAX_QUEUED); submit again later")
        raise_for(code, "", f"Idempotency-Key {idempotency_key!r} was used for another request")
        if acked is not None and acked < self.wait_replicas:
            raise NotReplicated(
                f"job {got_id} was written to the master, but {acked} of {self.wait_replicas} "
                f"replicas confirmed it within {self.wait_timeout_ms} ms; submit again with "
                "the same Idempotency-Key", got_id, acked, self.wait_replicas)
        self._remember(got_id, worker_type)
        if code == 0:
            self._seen[got_id] = rest[1]  # wait() blocks right after the queued event
            if len(self._seen) > _TYPE_CACHE:
                self._seen.pop(next(iter(self._seen)))
        status = JobStatus.QUEUED
        if code == 1:  # the earlier job may have run since: its status as it is now
            status = JobStatus(await self.redis.hget(keys.job(got_id), "status") or "queued")
        return JobSubmitted(job_id=got_id, status=status, worker_type=worker_type, kind=kind,
                            stream=stream, duplicate=code == 1)

    async def _submit_and_wait(self, keys: list[str], args: list[scripts.Arg]
                               ) -> tuple[list[Any], int]:
        """SUBMIT then WAIT on one connection: (the script's reply, replicas that have it)."""
        submit = ("EVALSHA", scripts.SUBMIT.sha, len(keys), *keys, *args)
        wait = ("WAIT", self.wait_replicas, self.wait_timeout_ms)
        reply, acked = await on_one_connection(self.redis, keys[0], [submit, wait])
        if isinstance(reply, NoScriptError):  # a restarted or promoted node: load, then again
            await self.redis.script_load(scripts.SUBMIT.text)
            reply, acked = await on_one_connection(self.redis, keys[0], [submit, wait])
        for result in (reply, acked):
            if isinstance(result, Exception):
                raise result
        return list(reply), int(acked)

    @staticmethod
    def _digest(kind: JobKind, fingerprint: str) -> str:
        return hashlib.sha256(f"{kind}:{fingerprint}".encode()).hexdigest()

    async def _earlier(self, kind: JobKind, fingerprint: str, idempotency_key: str
                       ) -> JobSubmitted | None:
        """The job an earlier submit with this key made (any worker type: one pipelined look-up),
        None when the key is unknown; IdempotencyConflict when it was used for another request."""
        names = list(CATALOGUE)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self.keys(name).idempotency(idempotency_key), "job_id", "fingerprint")
            found = await pipe.execute()
        for name, (job_id, digest) in zip(names, found, strict=True):
            if job_id is None:
                continue
            if digest != self._digest(kind, fingerprint):
                raise IdempotencyConflict(
                    f"Idempotency-Key {idempotency_key!r} was used for another request")
            keys = self.keys(name)
            status = await self.redis.hget(keys.job(job_id), "status")
            self._remember(job_id, name)
            return JobSubmitted(job_id=job_id, status=JobStatus(status or "queued"),
                                worker_type=name, kind=kind, stream=keys.stream(kind),
                                duplicate=True)
        return None

    def _remember(self, job_id: str, worker_type: str) -> None:
        self._types[job_id] = worker_type
        self._types.move_to_end(job_id)
        if len(self._types) > _TYPE_CACHE:
            self._types.popitem(last=False)

    async def worker_type_of(self, job_id: str) -> str:
        """Find which worker type holds a job (one pipelined lookup across the catalogue,
        skipped for jobs this producer submitted or found recently)."""
        if job_id in self._types:
            return self._types[job_id]
        names = list(CATALOGUE)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(self.keys(name).job(job_id), "worker_type")
            found = await pipe.execute()
        for name, value in zip(names, found, strict=True):
            if value:
                self._remember(job_id, name)
                return name
        raise JobNotFound(f"no job {job_id}")

    async def get(self, job_id: str) -> JobRecord:
        keys = self.keys(await self.worker_type_of(job_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.job(job_id))
            pipe.get(keys.job_result(job_id))
            raw, outcome = await pipe.execute()
        if not raw:
            self._types.pop(job_id, None)
            raise JobNotFound(f"no job {job_id}")
        try:
            return JobRecord.from_hash(raw, outcome)
        except ValidationError:  # a partial record (written by hand, or half expired)
            raise JobNotFound(f"no job {job_id} (its record is incomplete)") from None

    async def cancel(self, job_id: str) -> JobStatus:
        """Cancel a job: CANCELLED when it ended at once, RUNNING when its worker will stop it."""
        keys = self.keys(await self.worker_type_of(job_id))
        code, detail = await scripts.CANCEL(
            self.redis,
            [*keys.streams, keys.job(job_id), keys.job_events(job_id), keys.events, keys.delayed,
             keys.stats, keys.jobs],
            [*self.limits.common_args(), job_id, GROUP],
        )
        raise_for(code, "", f"job {job_id} is already {detail}")
        return JobStatus.CANCELLED if code == 0 else JobStatus.RUNNING

    async def list(
        self,
        status: JobStatus | None = None,
        worker_type: str | None = None,
        limit: int = 50,
        scan: int = LIST_SCAN,
    ) -> list[JobRecord]:
        """Most recent jobs first, optionally filtered. Bounded work: at most ``scan`` of the
        newest jobs (of all types together) are read per call, so a status filter that
        matches few jobs returns fewer than ``limit`` rather than reading every record."""
        types = [worker_type] if worker_type else list(CATALOGUE)
        window = min(limit if status is None else scan, scan)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in types:
                pipe.zrevrange(self.keys(name).jobs, 0, window - 1, withscores=True)
            per_type = await pipe.execute()
        scored = [(score, name, job_id) for name, rows in zip(types, per_type, strict=True)
                  for job_id, score in rows]
        scored.sort(reverse=True)
        del scored[window:]
        out: list[JobRecord] = []
        for start in range(0, len(scored), 200):
            chunk = scored[start:start + 200]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, name, job_id in chunk:
                    pipe.hgetall(self.keys(name).job(job_id))
                    pipe.get(self.keys(name).job_result(job_id))
                replies = await pipe.execute()
            for raw, outcome in zip(replies[::2], replies[1::2], strict=True):
                if raw and (status is None or raw.get("status") == status.value):
                    try:
                        out.append(JobRecord.from_hash(raw, outcome))
                    except ValidationError:  # one unreadable record must not fail the list
                        continue
                    if len(out) >= limit:
                        return out
        return out

    async def events(
        self, job_id: str, after: str = "0-0", block_ms: int = 15_000
    ) -> AsyncIterator[JobEvent]:
        """The job's events after ``after``, live, until the terminal one. Holds a connection
        while blocked; the gateway shares one reader instead (hub)."""
        keys = self.keys(await self.worker_type_of(job_id))
        stream = keys.job_events(job_id)
        history = await replay(self.redis, keys, job_id, after)  # + queued/final from the record
        last = after
        for entry_id, fields in history.entries:
            last = entry_id
            event = parse_event(entry_id, fields)
            yield event
            if event.type in TERMINAL_EVENTS:
                return
        if history.finished:
            return
        while True:
            got = await self.redis.xread({stream: last}, count=100,
                                         block=min(block_ms, self._slice_ms))
            for _name, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id
                    event = parse_event(entry_id, fields)
                    yield event
                    if event.type in TERMINAL_EVENTS:
                        return
            if not got and (await self.get(job_id)).status.terminal:
                return

    async def _terminal(self, job_id: str, timeout: float) -> dict[str, str]:
        """Block until the job's terminal event; return its fields. Push-based: the events
        stream wakes the reader, no polling."""
        deadline = time.monotonic() + timeout
        keys = self.keys(await self.worker_type_of(job_id))
        stream, last = keys.job_events(job_id), self._seen.pop(job_id, "0-0")
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise TimeoutError(f"job {job_id} not finished after {timeout} s")
            got = await self.redis.xread({stream: last}, count=100,
                                         block=min(remaining_ms, self._slice_ms))
            for _name, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("type") in TERMINAL_EVENTS:
                        return dict(fields)
            if not got:
                rec = await self.get(job_id)  # events expired or trimmed: ask the record
                if rec.status.terminal:
                    return {"type": rec.status.value, "data": orjson.dumps(
                        {"result": rec.result, "error": rec.error and rec.error.model_dump()}
                    ).decode()}

    async def wait(self, job_id: str, timeout: float = 60.0) -> JobRecord:
        """Block until the job is final; return its full record."""
        await self._terminal(job_id, timeout)
        return await self.get(job_id)

    async def result(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the job is final; return its result, or raise ``JobFailed`` (with the
        job's error) or ``JobCancelled``. The result travels in the terminal event itself, so
        this costs no read after the wake-up."""
        fields = await self._terminal(job_id, timeout)
        data = orjson.loads(fields.get("data") or "{}")
        if fields["type"] == "succeeded":
            result: dict[str, Any] = data.get("result") or {}
            return result
        if fields["type"] == "cancelled":
            raise JobCancelled(f"job {job_id} was cancelled")
        error = data.get("error") or {}
        raise JobFailed(f"job {job_id} failed: {error.get('code')}: {error.get('message')}",
                        error)
