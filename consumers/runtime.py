"""The worker: read → start → execute in a thread → finish, with lease renewal, reclaim of dead
workers' entries, retry promotion, heartbeats and graceful shutdown.

Concurrency is bounded by ``max_concurrent_jobs``: reads and reclaims ask for at most the free
slots, so no entry waits unstarted in this worker's pending list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from secrets import token_hex
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumers.execution import Outcome, classify, run_framework
from consumers.frameworks.base import Framework, JobContext
from consumers.progress import JobRun
from consumers.settings import WorkerSettings
from schemas.catalogue import CATALOGUE
from schemas.workers import GpuInfo, WorkerInfo
from streams import registry
from streams.consumer import Delivery, QueueConsumer
from streams.errors import NotOwner
from streams.keys import GROUP, QueueKeys
from streams.scripts import Arg, Script

log = structlog.get_logger("aiq.worker")
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
FinishCall = tuple[Script, list[str], list[Arg]]


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{token_hex(3)}"


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        framework: Framework,
        redis: Redis,
        read_conn: Redis,
        name: str | None = None,
        gpus: list[GpuInfo] | None = None,
    ) -> None:
        self.settings = settings
        self.framework = framework
        self.framework_version = framework.version()
        self.redis = redis
        self.read_conn = read_conn  # blocking XREADGROUP holds its own connection
        self.name = name or consumer_name()
        self.keys = QueueKeys(settings.worker_type, settings.redis_prefix)
        self.queue = QueueConsumer(redis, self.keys, self.name, settings.limits,
                                   settings.max_deliveries)
        self.slots = settings.max_concurrent_jobs
        self.runs: dict[str, JobRun] = {}  # entry id -> running job
        self.gpus = gpus or []
        self.model_types = CATALOGUE[settings.worker_type].model_types
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._executor = ThreadPoolExecutor(self.slots, thread_name_prefix="aiq-job")
        self._finish_q: asyncio.Queue[tuple[FinishCall, asyncio.Future[Any]]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started_at = int(time.time() * 1000)
        self.log = log.bind(worker=self.name, worker_type=settings.worker_type)

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until ``stop()``; then drain within the grace period and hand back the rest."""
        await self._retry_forever("create groups", self.queue.ensure_groups)
        await self._heartbeat_once()
        self.log.info("worker started", framework=self.framework.name,
                      framework_version=self.framework_version, slots=self.slots)
        loops = [self._read_loop(), self._maintenance_loop(), self._heartbeat_loop(),
                 self._finish_loop()]
        background = [asyncio.create_task(c) for c in loops]
        await self.stopping.wait()
        background[0].cancel()  # stop reading at once
        await self._drain()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self._deregister()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.stopped.set()
        self.log.info("worker stopped")

    def stop(self) -> None:
        self.stopping.set()

    async def _drain(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            self.log.info("draining", running=len(tasks), grace_s=self.settings.shutdown_grace_s)
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
            for run in list(self.runs.values()):
                run.interrupted = True  # the thread stops at its next step
            if pending:
                await self._hand_back(list(self.runs.values()))
        await self._hand_back_unseen()
        while not self._finish_q.empty():  # last completions still queued
            await self._flush_finishes()

    async def _hand_back(self, runs: list[JobRun]) -> None:
        calls = [self.queue.handback_call(r.delivery, "worker shutdown") for r in runs]
        for run in runs:
            self.runs.pop(run.delivery.entry_id, None)
        if calls:
            with _suppress_redis(self.log, "hand back"):
                await self.queue.finish(calls)
                self.log.info("handed back", jobs=[r.delivery.job_id for r in runs])

    async def _hand_back_unseen(self) -> None:
        """Entries delivered to this consumer but never started (e.g. a read cut short)."""
        with _suppress_redis(self.log, "hand back unseen"):
            for stream in self.keys.streams:
                pending = await self.redis.xpending_range(
                    stream, GROUP, "-", "+", 1000, consumername=self.name)
                ids = [p["message_id"] for p in pending if p["message_id"] not in self.runs]
                for entry_id in ids:
                    got = await self.redis.xrange(stream, entry_id, entry_id)
                    fields = got[0][1] if got else {}
                    d = Delivery(stream, self.keys.kind_of_stream(stream), entry_id, fields)
                    await self.queue.finish([self.queue.handback_call(d, "worker shutdown")])

    async def _deregister(self) -> None:
        with _suppress_redis(self.log, "deregister"):
            await registry.deregister(self.redis, self.keys, self.name)

    # ---- claim -----------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.runs)

    async def _read_loop(self) -> None:
        backoff = _Backoff()
        while not self.stopping.is_set():
            if self.free_slots <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                batch = await self.queue.read(self.read_conn, self.free_slots,
                                              self.settings.block_ms)
                await self._claim(batch)
                backoff.reset()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    self.log.exception("read failed")
                    await backoff.wait(self.log, "read", exc)
                    continue
                self.log.warning("consumer group missing (Redis restarted?); recreating")
                await self._retry_forever("create groups", self.queue.ensure_groups)
            except REDIS_DOWN as exc:
                await backoff.wait(self.log, "read", exc)

    async def _claim(self, batch: list[Delivery]) -> None:
        good = [d for d in batch if d.message is not None]
        for d in batch:
            if d.message is None:
                self.log.warning("malformed entry dead-lettered", entry_id=d.entry_id,
                                 stream=d.stream, reason=d.parse_error)
                await self.queue.dead_letter(d, d.parse_error)
        if not good:
            return
        for outcome in await self.queue.start(good):
            d = outcome.delivery
            if outcome.started:
                self._launch(d)
            else:
                self.log.info("entry not started", job_id=d.job_id, entry_id=d.entry_id,
                              code=outcome.code, detail=outcome.detail)

    def _launch(self, d: Delivery) -> None:
        run = JobRun(d, asyncio.get_running_loop(), self._publish_progress,
                     self.settings.progress_interval_s)
        self.runs[d.entry_id] = run
        task = asyncio.create_task(self._execute(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- execute ---------------------------------------------------------------------------

    async def _execute(self, run: JobRun) -> None:
        d = run.delivery
        assert d.message is not None
        jlog = self.log.bind(job_id=d.job_id, attempt=d.attempt, deliveries=d.deliveries)
        jlog.info("job started", model_type=d.message.model_type, kind=d.message.kind.value)
        try:
            outcome = await self._run_in_thread(run)
            await run.drain()
            await self._finalize(run, outcome, jlog)
        except REDIS_DOWN as exc:
            jlog.error("could not record the job's outcome; its lease will expire", error=str(exc))
        except Exception:
            jlog.exception("finishing the job failed; its lease will expire and it is reclaimed")
        finally:
            self.runs.pop(d.entry_id, None)
            self._slot_freed.set()

    async def _run_in_thread(self, run: JobRun) -> Outcome:
        d = run.delivery
        assert d.message is not None
        if d.message.model_type not in self.model_types:
            return Outcome.failure("unsupported_model_type",
                                   f"{self.settings.worker_type} does not serve "
                                   f"{d.message.model_type!r}")
        msg = d.message.model_copy(update={"attempt": d.attempt})
        ctx = JobContext(msg, self.settings.data_root, self.settings.artifact_root, d.deliveries)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            result = await loop.run_in_executor(self._executor, run_framework, self.framework,
                                                ctx, run)
        except BaseException as exc:
            return classify(exc, run)
        result.setdefault("framework", self.framework.name)
        result.setdefault("framework_version", self.framework_version)
        result.setdefault("duration_s", round(time.monotonic() - started, 3))
        result.setdefault("worker", self.name)
        return Outcome.success(result)

    # ---- finalize --------------------------------------------------------------------------

    async def _finalize(self, run: JobRun, outcome: Outcome, jlog: Any) -> None:
        d = run.delivery
        if outcome.kind == "lost":
            jlog.warning("job lost its lease to another worker; result dropped")
            return
        if outcome.kind == "interrupted":
            if d.entry_id in self.runs:  # not handed back yet
                await self._finish(self.queue.handback_call(d, "worker shutdown"))
            return
        call = self._outcome_call(d, outcome)
        fenced = await self._finish(call)
        if fenced is not None:
            jlog.warning("write fenced: the job is no longer ours", error=str(fenced))
            return
        jlog.info("job " + outcome.kind, **outcome.log_fields())

    def _outcome_call(self, d: Delivery, outcome: Outcome) -> FinishCall:
        if outcome.kind == "succeeded":
            return self.queue.complete_call(d, outcome.result)
        if outcome.kind == "cancelled":
            return self.queue.cancel_call(d)
        max_attempts = self.settings.max_retries + 1
        if outcome.retryable and d.attempt < max_attempts:
            return self.queue.retry_call(d, outcome.error, self._backoff_ms(d.attempt))
        if outcome.retryable:
            outcome.error["message"] += f" (gave up after {d.attempt} attempts)"
        return self.queue.fail_call(d, outcome.error)

    def _backoff_ms(self, attempt: int) -> int:
        base = self.settings.retry_backoff_s * 2 ** (attempt - 1)
        capped = min(base, self.settings.retry_backoff_max_s)
        return int(capped * 1000 * random.uniform(0.8, 1.0))

    async def _finish(self, call: FinishCall) -> BaseException | None:
        """Queue a finishing script; finishes are flushed together in one round trip."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._finish_q.put((call, fut))
        result: BaseException | None = await fut
        return result

    async def _finish_loop(self) -> None:
        while True:
            await self._flush_finishes(block=True)

    async def _flush_finishes(self, block: bool = False) -> None:
        items = [await self._finish_q.get()] if block else []
        while not self._finish_q.empty():
            items.append(self._finish_q.get_nowait())
        if not items:
            return
        backoff = _Backoff()
        while True:
            try:
                results = await self.queue.finish([call for call, _ in items])
                break
            except REDIS_DOWN as exc:
                await backoff.wait(self.log, "finish", exc)
        for (_, fut), res in zip(items, results, strict=True):
            if not fut.done():
                fut.set_result(res)

    async def _publish_progress(self, d: Delivery, data: dict[str, Any]) -> bool:
        try:
            return await self.queue.progress(d, data)
        except NotOwner:
            run = self.runs.get(d.entry_id)
            if run is not None:
                run.lost = True
            return False
        except REDIS_DOWN:
            return False  # progress is best-effort; the next report goes out when Redis is back

    # ---- maintenance -----------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        """Renew leases, reclaim dead workers' entries, promote due retries: on a timer, so it
        runs even when the queue is idle."""
        backoff = _Backoff()
        while not self.stopping.is_set():
            try:
                await self._renew()
                await self._reclaim()
                await self.queue.promote_due(int(time.time() * 1000))
                backoff.reset()
            except REDIS_DOWN as exc:
                await backoff.wait(self.log, "maintenance", exc)
                continue
            except ResponseError as exc:
                self.log.warning("maintenance error", error=str(exc))
            await _sleep_unless(self.stopping, self.settings.reclaim_every_s)

    async def _renew(self) -> None:
        runs = list(self.runs.values())
        if not runs:
            return
        codes = await self.queue.renew([r.delivery for r in runs])
        for run in runs:
            code = codes.get(run.delivery.entry_id, 0)
            if code == 1:
                run.lost = True
                self.log.warning("lease lost", job_id=run.delivery.job_id)
            elif code == 2:
                run.cancel_requested = True

    async def _reclaim(self) -> None:
        if self.free_slots <= 0 or self.stopping.is_set():
            return
        batch = await self.queue.reclaim(self.free_slots, self.settings.lease_ms)
        if batch:
            self.log.info("reclaimed entries", entries=[d.entry_id for d in batch])
            await self._claim(batch)

    async def _heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            await _sleep_unless(self.stopping, self.settings.heartbeat_interval_s)
            with _suppress_redis(self.log, "heartbeat"):
                await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        info = WorkerInfo(
            worker_id=self.name, worker_type=self.settings.worker_type,
            framework=self.framework.name, framework_version=self.framework_version,
            hostname=socket.gethostname(), pid=os.getpid(), started_at=self._started_at,
            heartbeat_at=int(time.time() * 1000),
            max_concurrent_jobs=self.slots,
            running_jobs=[r.delivery.job_id for r in self.runs.values()],
            gpus=self.gpus, state="draining" if self.stopping.is_set() else "running",
        )
        await registry.heartbeat(self.redis, self.keys, info,
                                 ttl_s=self.settings.heartbeat_interval_s * 3)

    async def _retry_forever(self, what: str, fn: Callable[[], Awaitable[None]]) -> None:
        backoff = _Backoff()
        while True:
            try:
                await fn()
                return
            except REDIS_DOWN as exc:
                await backoff.wait(self.log, what, exc)


class _Backoff:
    """Exponential backoff for Redis outages: 0.1 s doubling to 5 s."""

    def __init__(self) -> None:
        self.delay = 0.1

    def reset(self) -> None:
        self.delay = 0.1

    async def wait(self, logger: Any, what: str, exc: BaseException) -> None:
        logger.warning("redis unavailable; retrying", during=what, error=str(exc),
                       retry_in_s=self.delay)
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 5.0)


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


class _suppress_redis:
    def __init__(self, logger: Any, what: str) -> None:
        self.logger, self.what = logger, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and isinstance(exc, REDIS_DOWN):
            self.logger.warning("redis unavailable", during=self.what, error=str(exc))
            return True
        return False
