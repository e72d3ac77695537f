"""Submitting, finding, listing, cancelling and awaiting jobs (the client side of the queue)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from schemas.catalogue import CATALOGUE, MODEL_TYPES, RoutingError, route, serves
from schemas.commands import CommandRequest
from schemas.events import TERMINAL_EVENTS, JobEvent, parse_event
from schemas.records import JobRecord, JobSubmitted
from schemas.requests import InferenceRequest, TrainingRequest, inference_parameter_problems
from schemas.status import JobKind, JobStatus, Priority
from streams import scripts
from streams.connection import connection_options, on_one_connection
from streams.errors import (
    IdempotencyConflict,
    InvalidParameters,
    JobCancelled,
    JobFailed,
    JobNotFound,
    ModelNotReady,
    NotReplicated,
    raise_for,
)
from streams.events import replay
from streams.groups import ensure_groups
from streams.keys import DEFAULT_PREFIX, GROUP, QueueKeys
from streams.limits import StreamLimits
from streams.submission import (
    CHECK,
    NO_ROOM_CHECK,
    WRITE,
    NewJob,
    check_size,
    command_job,
    digest,
    inference_fingerprint,
    inference_job,
    model_ready,
    outcomes,
    raise_refused,
    refusal,
    same_key_same_request,
    script_call,
    training_job,
)

_TYPE_CACHE = 10_000
LIST_SCAN = 2_000  # newest jobs a listing reads at most (GET /jobs)
# Blocking reads wait in slices of at most this, and at most half the client's socket timeout
# (redis-py's default: 5 s), which would otherwise cut a long wait short. A slice that ends
# empty costs one record lookup.
_BLOCK_SLICE_MS = 2_000


def new_job_id() -> str:
    return f"job_{uuid.uuid4()}"


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
        self._keys: dict[str, QueueKeys] = {}
        self._types: OrderedDict[str, str] = OrderedDict()  # job id -> worker type (LRU)
        self._seen: dict[str, str] = {}  # job id -> its queued event's id
        timeout = connection_options(redis).get("socket_timeout", 5.0)
        self._slice_ms = _BLOCK_SLICE_MS if timeout is None else \
            max(10, min(_BLOCK_SLICE_MS, int(timeout * 500)))

    def keys(self, worker_type: str) -> QueueKeys:
        keys = self._keys.get(worker_type)
        if keys is None:
            keys = self._keys[worker_type] = QueueKeys(worker_type, self.prefix)
        return keys

    async def submit_training(
        self, req: TrainingRequest, idempotency_key: str | None = None
    ) -> JobSubmitted:
        worker_type = route(req.model_type, req.requires_gpu, req.framework_override)
        return await self._submit(training_job(req, worker_type, new_job_id(), idempotency_key))

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
            article = "an" if model.kind is JobKind.INFERENCE else "a"
            raise ModelNotReady(f"{req.model_id} is {article} {model.kind.value} job, not a "
                                "trained model")
        if model.status is not JobStatus.SUCCEEDED:
            raise ModelNotReady(f"model {req.model_id} is {model.status.value}, not succeeded")
        if model.model_type in MODEL_TYPES and not serves(model.model_type, JobKind.INFERENCE):
            raise RoutingError(f"model type {model.model_type!r} serves no inference jobs")
        problems = inference_parameter_problems(model.model_type, req.parameters)
        if problems:
            raise InvalidParameters(problems)
        fields = {"model_type": model.model_type, "worker_type": model.worker_type,
                  "requires_gpu": str(int(model.requires_gpu))}
        return await self._submit(inference_job(req, fields, new_job_id(), idempotency_key))

    async def submit_command(self, req: CommandRequest, worker_type: str,
                             idempotency_key: str | None = None) -> JobSubmitted:
        """Queue a command job on ``worker_type`` (routed by the caller, which knows which
        types have command jobs on: schemas.commands.route_command)."""
        return await self._submit(command_job(req, worker_type, new_job_id(), idempotency_key))

    async def _submit(self, job: NewJob) -> JobSubmitted:
        keys = self.keys(job.worker_type)
        if job.worker_type not in self._grouped:
            await ensure_groups(self.redis, keys)
            self._grouped.add(job.worker_type)
        if job.kind is JobKind.COMMAND and f"{job.worker_type}:command" not in self._grouped:
            await ensure_groups(self.redis, keys, keys.streams_of((JobKind.COMMAND,)))
            self._grouped.add(f"{job.worker_type}:command")
        script_keys, script_args = script_call(keys, self.limits, [job], WRITE,
                                               self.limits.max_queued)
        acked = None
        if self.wait_replicas:
            reply, acked = await self._submit_and_wait(script_keys, script_args)
        else:
            reply = await scripts.SUBMIT(self.redis, script_keys, script_args)
        error = refusal(reply, [job], [0])
        if error is not None:
            error.items = ()
            raise error
        (done,) = outcomes(reply)
        if acked is not None and acked < self.wait_replicas:
            raise NotReplicated(
                f"job {done.job_id} was written to the master, but {acked} of "
                f"{self.wait_replicas} replicas confirmed it within {self.wait_timeout_ms} ms; "
                "submit again with the same Idempotency-Key", done.job_id, acked,
                self.wait_replicas)
        self._remember(done.job_id, job.worker_type)
        if not done.duplicate:
            self._seen[done.job_id] = done.event_id  # wait() blocks right after the queued event
            if len(self._seen) > _TYPE_CACHE:
                self._seen.pop(next(iter(self._seen)))
        status, lane = JobStatus.QUEUED, done.priority
        if done.duplicate:  # the earlier job may have run since: its status as it is now
            status, lane = await self._status_and_lane(keys.job(done.job_id))
        # Every value is ours and already typed: no validation pass (one per submit).
        return JobSubmitted.model_construct(
            job_id=done.job_id, status=status, worker_type=job.worker_type, kind=job.kind,
            stream=keys.stream(job.kind, lane), duplicate=done.duplicate)

    async def _status_and_lane(self, record: str) -> tuple[JobStatus, Priority]:
        status, lane = await self.redis.hmget(record, "status", "priority")
        return JobStatus(status or "queued"), Priority(lane or "normal")

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

    # --- batches: many jobs in one call, all or none ----------------------------------------

    async def submit_training_batch(
        self, items: Sequence[tuple[TrainingRequest, str | None]]
    ) -> list[JobSubmitted]:
        """Queue up to MAX_BATCH_JOBS training jobs, each with its own Idempotency-Key (or
        None), all or none (see ``_submit_batch``); the answers in the order of ``items``."""
        check_size(items)
        jobs = []
        for i, (req, key) in enumerate(items):
            try:
                worker_type = route(req.model_type, req.requires_gpu, req.framework_override)
            except RoutingError as exc:
                raise RoutingError(f"jobs[{i}]: {exc}") from None
            jobs.append(training_job(req, worker_type, new_job_id(), key))
        same_key_same_request([(job.idempotency_key, job.fingerprint) for job in jobs])
        return await self._submit_batch(jobs, list(range(len(jobs))))

    async def submit_inference_batch(
        self, items: Sequence[tuple[InferenceRequest, str | None]]
    ) -> list[JobSubmitted]:
        """Queue up to MAX_BATCH_JOBS inference jobs, all or none. Every model is looked up
        first: ``JobNotFound`` / ``ModelNotReady`` carry the positions (``items``) of every job
        whose model is unknown / not a succeeded training job, and nothing is queued."""
        check_size(items)
        prints = [inference_fingerprint(req) if key else "" for req, key in items]
        same_key_same_request([(key, fp) for (_, key), fp in zip(items, prints, strict=True)])
        earlier = await self._earlier_batch(
            JobKind.INFERENCE, [(key, fp) for (_, key), fp in zip(items, prints, strict=True)])
        todo = [i for i in range(len(items)) if i not in earlier]
        models = await self._models({items[i][0].model_id for i in todo})
        missing = [i for i in todo if models.get(items[i][0].model_id) is None]
        if missing:
            error: JobNotFound | ModelNotReady = JobNotFound(
                f"model_id names no training job (unknown or expired) in jobs{missing[:10]}")
            error.items = tuple(missing)
            raise error
        refused = [i for i in todo if not model_ready(models[items[i][0].model_id])]
        if refused:
            error = ModelNotReady(f"the model is not a succeeded training job in "
                                  f"jobs{refused[:10]}")
            error.items = tuple(refused)
            raise error
        found = {model_id: m for model_id, m in models.items() if m is not None}
        problems: list[tuple[str, str]] = []
        for i in todo:  # as a single submit: the model type's kinds and declared parameters
            model_type = found[items[i][0].model_id]["model_type"]
            if model_type in MODEL_TYPES and not serves(model_type, JobKind.INFERENCE):
                raise RoutingError(f"jobs[{i}]: model type {model_type!r} serves no inference "
                                   "jobs")
            problems += [(f"jobs[{i}].{field}", rule) for field, rule in
                         inference_parameter_problems(model_type, items[i][0].parameters)]
        if problems:
            raise InvalidParameters(problems)
        jobs = [inference_job(items[i][0], found[items[i][0].model_id], new_job_id(),
                              items[i][1]) for i in todo]
        done = iter(await self._submit_batch(jobs, todo))
        return [earlier[i] if i in earlier else next(done) for i in range(len(items))]

    async def _submit_batch(self, jobs: list[NewJob], positions: list[int]
                            ) -> list[JobSubmitted]:
        """One submit call per worker type (one hash slot each), pipelined. A batch of one type
        is one script: checked whole, then written, atomically. A batch of several types is
        first checked in every slot by the same script in check mode (writes nothing), and
        written only when every slot accepts; the write pass then skips the queue-room check
        (admitted already) but still refuses a key that another request took in between: the
        one race that can leave such a batch partly queued (see docs/API.md)."""
        if not jobs:  # e.g. every job of an inference batch matched an earlier key
            return []
        groups: dict[str, list[int]] = {}
        for n, job in enumerate(jobs):
            groups.setdefault(job.worker_type, []).append(n)
        per_type = {wt: [jobs[n] for n in ns] for wt, ns in groups.items()}
        where = {wt: [positions[n] for n in ns] for wt, ns in groups.items()}
        max_queued = self.limits.max_queued
        if len(groups) > 1:
            checks = await scripts.execute(self.redis, [
                (scripts.SUBMIT, *script_call(self.keys(wt), self.limits, js, CHECK, max_queued))
                for wt, js in per_type.items()])
            raise_refused(checks, per_type, where, written=False)
            max_queued = NO_ROOM_CHECK
        calls = [script_call(self.keys(wt), self.limits, js, WRITE, max_queued)
                 for wt, js in per_type.items()]
        replies, acked = await self._write_batch(calls)
        raise_refused(replies, per_type, where, written=True)
        for worker_type in groups:  # after the write: a refused batch leaves no empty stream
            if worker_type not in self._grouped:
                await ensure_groups(self.redis, self.keys(worker_type))
                self._grouped.add(worker_type)
        out = self._answers(jobs, groups, replies)
        if acked and min(acked) < self.wait_replicas:
            first = next(o for o in out if o is not None)
            raise NotReplicated(
                f"the batch was written to the master, but only {min(acked)} of "
                f"{self.wait_replicas} replicas confirmed it within {self.wait_timeout_ms} ms; "
                "submit it again with the same Idempotency-Keys", first.job_id, min(acked),
                self.wait_replicas)
        await self._duplicate_statuses(out, [(n, self.keys(o.worker_type).job(o.job_id))
                                             for n, o in enumerate(out)
                                             if o is not None and o.duplicate])
        return [o for o in out if o is not None]

    async def _write_batch(self, calls: list[tuple[list[str], list[scripts.Arg]]]
                           ) -> tuple[list[Any], list[int]]:
        """The write pass, pipelined: the replies, and with durable submit how many replicas
        confirmed each call (WAIT on the call's own connection)."""
        if not self.wait_replicas:
            replies = await scripts.execute(self.redis, [(scripts.SUBMIT, k, a) for k, a in calls])
            return replies, []
        waited = await asyncio.gather(*(self._submit_and_wait(k, a) for k, a in calls))
        return [reply for reply, _ in waited], [n for _, n in waited]

    def _answers(self, jobs: list[NewJob], groups: dict[str, list[int]], replies: list[Any]
                 ) -> list[JobSubmitted | None]:
        out: list[JobSubmitted | None] = [None] * len(jobs)
        for (wt, ns), reply in zip(groups.items(), replies, strict=True):
            keys = self.keys(wt)
            for n, done in zip(ns, outcomes(reply), strict=True):
                self._remember(done.job_id, wt)
                out[n] = JobSubmitted(job_id=done.job_id, status=JobStatus.QUEUED,
                                      worker_type=wt, kind=jobs[n].kind,
                                      stream=keys.stream(jobs[n].kind, done.priority),
                                      duplicate=done.duplicate)
        return out

    async def _duplicate_statuses(self, out: list[JobSubmitted | None],
                                  dups: list[tuple[int, str]]) -> None:
        """Duplicates answer their earlier job's status as it is now, and its lane (one
        pipelined read)."""
        if not dups:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, record in dups:
                pipe.hmget(record, "status", "priority")
            found = await pipe.execute()
        for (n, _), (status, lane) in zip(dups, found, strict=True):
            job = out[n]
            assert job is not None
            stream = self.keys(job.worker_type).stream(job.kind, Priority(lane or "normal"))
            out[n] = job.model_copy(update={"status": JobStatus(status or "queued"),
                                            "stream": stream})

    async def _earlier_batch(self, kind: JobKind, keyed: list[tuple[str | None, str]]
                             ) -> dict[int, JobSubmitted]:
        """``_earlier`` for many (key, fingerprint digest) at once: position -> the job an
        earlier submit with that key made; IdempotencyConflict (with ``items``) when one was
        used for another request."""
        asked = [(i, key, fp) for i, (key, fp) in enumerate(keyed) if key]
        if not asked:
            return {}
        names = list(CATALOGUE)
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, key, _ in asked:
                for name in names:
                    pipe.hmget(self.keys(name).idempotency(key), "job_id", "fingerprint")
            found = iter(await pipe.execute())
        hits: list[tuple[int, str, str]] = []  # position, worker type, job id
        for i, key, fp in asked:
            for name in names:
                job_id, stored = next(found)
                if job_id is None:
                    continue
                if stored != fp:
                    error = IdempotencyConflict(
                        f"jobs[{i}]: Idempotency-Key {key!r} was used for another request")
                    error.items = (i,)
                    raise error
                hits.append((i, name, job_id))
        out: list[JobSubmitted | None] = [None] * len(keyed)
        for i, name, job_id in hits:
            keys = self.keys(name)
            self._remember(job_id, name)
            out[i] = JobSubmitted(job_id=job_id, status=JobStatus.QUEUED, worker_type=name,
                                  kind=kind, stream=keys.stream(kind), duplicate=True)
        await self._duplicate_statuses(out, [(i, self.keys(name).job(job_id))
                                             for i, name, job_id in hits])
        return {i: job for i, job in enumerate(out) if job is not None}

    async def _models(self, model_ids: set[str]) -> dict[str, dict[str, str] | None]:
        """The record fields an inference job needs of each model (None: no such job): one
        pipelined look-up across the catalogue."""
        ids, names = sorted(model_ids), list(CATALOGUE)
        fields = ("kind", "status", "model_type", "worker_type", "requires_gpu")
        async with self.redis.pipeline(transaction=False) as pipe:
            for model_id in ids:
                for name in names:
                    pipe.hmget(self.keys(name).job(model_id), *fields)
            found = iter(await pipe.execute())
        out: dict[str, dict[str, str] | None] = {}
        for model_id in ids:
            out[model_id] = None
            for _ in names:
                values = next(found)
                if values[0] is not None and values[3] is not None:
                    out[model_id] = dict(zip(fields, values, strict=True))
        return out

    @staticmethod
    def _digest(kind: JobKind, fingerprint: str) -> str:
        return digest(kind, fingerprint)

    async def _earlier(self, kind: JobKind, fingerprint: str, idempotency_key: str
                       ) -> JobSubmitted | None:
        """The job an earlier submit with this key made (any worker type: one pipelined look-up),
        None when the key is unknown; IdempotencyConflict when it was used for another request."""
        names = list(CATALOGUE)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self.keys(name).idempotency(idempotency_key), "job_id", "fingerprint")
            found = await pipe.execute()
        for name, (job_id, stored) in zip(names, found, strict=True):
            if job_id is None:
                continue
            if stored != self._digest(kind, fingerprint):
                raise IdempotencyConflict(
                    f"Idempotency-Key {idempotency_key!r} was used for another request")
            keys = self.keys(name)
            status, lane = await self._status_and_lane(keys.job(job_id))
            self._remember(job_id, name)
            return JobSubmitted(job_id=job_id, status=status, worker_type=name, kind=kind,
                                stream=keys.stream(kind, lane), duplicate=True)
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
            [keys.job(job_id), keys.job_events(job_id), keys.events, keys.delayed, keys.stats,
             keys.jobs, keys.job_logs(job_id), *keys.all_streams],
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

