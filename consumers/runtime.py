"""The worker: read → start → execute in a thread → finish, with lease renewal, reclaim of dead
workers' entries, retry promotion, heartbeats and graceful shutdown.

Concurrency is bounded by ``max_concurrent_jobs``: reads and reclaims ask for at most the free
slots, so no entry waits unstarted in this worker's pending list. The read loop takes expired
entries back (a reclaim sweep, every ``reclaim_every_s``) before it reads new ones, and keeps
sweeping as slots free until no expired entry is left. What a SIGKILL can strand is bounded by
``capacity``: at most twice ``max_concurrent_jobs`` entries are this worker's at once, the jobs
running and the final writes not yet landed (a finished job whose write was lost runs again).

Every loop survives what Redis does to it: unavailable, failing over (READONLY) or full (OOM)
backs off and retries; any other error is logged with its traceback and retried too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from secrets import token_hex
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from consumers import oom
from consumers.admission import Admission
from consumers.execution import Outcome, classify, run_framework
from consumers.frameworks.base import Framework, JobContext, JobFailure
from consumers.gpu import GpuDevices
from consumers.progress import JobRun
from consumers.settings import WorkerSettings
from consumers.threads import JobThreads
from schemas.catalogue import CATALOGUE, Device
from schemas.workers import GpuInfo, WorkerInfo
from streams import registry
from streams.consumer import Delivery, Finish, QueueConsumer, ReclaimSweep, StartOutcome
from streams.errors import UNAVAILABLE, NotOwner
from streams.keys import GROUP, QueueKeys

log = structlog.get_logger("aiq.worker")
# Entries read (and started) per round trip at most: smaller batches keep several round trips
# in flight under load, so Redis runs one batch's scripts while this process launches another.
READ_CHUNK = 64


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
        devices: GpuDevices | None = None,
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
        self.runs: dict[str, JobRun] = {}  # entry id -> job in flight (running or finishing)
        self.executing = 0  # jobs whose code runs now: what MAX_CONCURRENT_JOBS bounds
        self._launching = 0  # started jobs whose launch is scheduled on the loop (_launch_all)
        self.gpus = gpus or []
        self.model_types = CATALOGUE[settings.worker_type].model_types
        # CPU worker types run on the CPU even where a GPU is visible.
        self.device = "cuda" if CATALOGUE[settings.worker_type].device is Device.GPU else "cpu"
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self._slot_freed = asyncio.Event()  # a slot, or room for more entries, came free
        self._batch: list[Delivery] = []  # read, not yet started
        self._sweep: ReclaimSweep | None = None  # reclaim sweep under way
        self._next_sweep_at = 0.0  # monotonic; the first sweep runs at once
        self._threads: JobThreads | None = None  # made in run(), on the serving loop
        self._finishes: deque[tuple[Finish, Outcome]] = deque()  # final writes to flush
        self._finish_added = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # last progress reports in flight
        self._idle = asyncio.Event()  # set when no job code runs
        self._started_at = int(time.time() * 1000)
        self.log = log.bind(worker=self.name, worker_type=settings.worker_type)
        # GPU admission: on for any worker with GPU devices (real, or scripted by settings).
        self.admission = (Admission(devices, self.queue, redis, self.keys, settings, self.name)
                          if devices is not None else None)

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until ``stop()``; then drain within the grace period and hand back the rest."""
        self._threads = JobThreads(asyncio.get_running_loop(), self.slots)
        await self._retry_forever("create groups", self.queue.ensure_groups)
        await self._retry_forever("register", self._heartbeat_once)
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
        if self.admission is not None:
            await self.admission.close()
        self._threads.shutdown()
        self.stopped.set()
        self.log.info("worker stopped")

    def stop(self) -> None:
        self.stopping.set()

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # launches the read loop scheduled (_launch_all) happen first
        if self.executing:
            self.log.info("draining", running=self.executing,
                          grace_s=self.settings.shutdown_grace_s)
            self._idle.clear()
            if self.executing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), self.settings.shutdown_grace_s)
        if self._tasks:  # last progress reports of jobs that just ended
            await asyncio.wait(list(self._tasks), timeout=5)
        # What finished in time is recorded as such (bounded: Redis may be down).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush_finishes(), timeout=10)
        unfinished = list(self.runs.values())
        for run in unfinished:
            run.interrupted = True  # the thread stops at its next step
        await self._hand_back(unfinished)
        await self._hand_back_unseen()

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
        """A slot frees when the job's code returns; its final write is then in flight (its
        entry stays leased until that write lands), so reading goes on meanwhile."""
        return self.slots - self.executing - self._launching

    @property
    def capacity(self) -> int:
        """How many more entries this worker takes now: the free slots, but never more than
        twice ``slots`` entries held at once (running, launching, or final write in flight), so a
        SIGKILL strands at most that many."""
        held = len(self.runs) + self._launching
        return min(self.free_slots, 2 * self.slots - held)

    async def _read_loop(self) -> None:
        await self._forever("read", self._read_step)

    async def _read_step(self) -> None:
        """Take work while there is room: held GPU jobs first, then expired entries (a reclaim
        sweep), then new entries. Blocks for new entries when idle; under load, starts each
        batch and reads the next one in the same round trip."""
        if not self._batch and self.capacity <= 0:
            self._slot_freed.clear()
            if self.capacity <= 0:
                await self._slot_freed.wait()
            return
        try:
            if not self._batch and self.admission is not None and self.admission.holding:
                # Holding a job for GPU memory: take nothing new; check it again at a job
                # end or on the recheck timer.
                await self.admission.wait(self.stopping)
                await self._claim([])
                return
            if not self._batch and self._sweep_due():
                await self._reclaim()
                return
            if not self._batch:
                self._batch = await self.queue.read(
                    self.read_conn, min(self.capacity, READ_CHUNK), self._block_ms())
            self._batch = await self._claim(self._batch, read_more=True)
        except UNAVAILABLE:
            raise  # the same batch is started again once Redis is back
        except Exception as exc:
            if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                self.log.warning("consumer group missing (Redis restarted?); recreating")
                await self._retry_forever("create groups", self.queue.ensure_groups)
                return
            self._batch = []  # entries that cannot be started: reclaimed after the lease
            raise

    def _sweep_due(self) -> bool:
        """A reclaim sweep is under way, or one is due (every ``reclaim_every_s``)."""
        if self._sweep is None and time.monotonic() >= self._next_sweep_at:
            self._sweep = self.queue.sweep()
            self._next_sweep_at = time.monotonic() + self.settings.reclaim_every_s
        return self._sweep is not None

    def _block_ms(self) -> int:
        """Block for new entries no longer than until the next reclaim sweep is due."""
        until_sweep = (self._next_sweep_at - time.monotonic()) * 1000
        return max(1, min(self.settings.block_ms, int(until_sweep)))

    async def _reclaim(self) -> None:
        """Take back up to ``capacity`` expired entries of dead workers, going on with the
        sweep under way; it ends when every pending list was read to its end."""
        assert self._sweep is not None
        batch = await self.queue.reclaim(min(self.capacity, READ_CHUNK),
                                         self.settings.lease_ms, self._sweep)
        if self._sweep.done:
            self._sweep = None
        # An entry of this worker's own whose renewal is late is still in flight here.
        batch = [d for d in batch if d.entry_id not in self.runs]
        if batch:
            self.log.info("reclaimed entries", entries=[d.entry_id for d in batch])
            await self._claim(batch)

    async def _claim(self, batch: list[Delivery], read_more: bool = False) -> list[Delivery]:
        """Dead-letter malformed entries, start the rest and launch what started. With
        ``read_more``, also read (without blocking) as many entries as slots stay free, in the
        same round trip; they are returned, to be claimed next."""
        good = [d for d in batch if d.message is not None]
        for d in batch:
            if d.message is None:
                self.log.warning("malformed entry dead-lettered", entry_id=d.entry_id,
                                 stream=d.stream, reason=d.parse_error)
                await self.queue.dead_letter(d, d.parse_error)
        if self.admission is not None:
            good = await self.admission.admit(good, self.capacity)
        holding = self.admission is not None and self.admission.holding
        count = min(self.capacity - len(good), READ_CHUNK) if read_more and not holding else 0
        if not good:
            return []
        outcomes, more = await self._start(good, count)
        started = []
        for outcome in outcomes:
            d = outcome.delivery
            if outcome.started:
                started.append(d)
            else:
                if self.admission is not None:
                    self.admission.release(d.entry_id)
                self.log.info("entry not started", job_id=d.job_id, entry_id=d.entry_id,
                              code=outcome.code, detail=outcome.detail)
        # Launched on the next loop turn: the caller first sends the next start + read, so
        # Redis works on it while this process hands these jobs to their threads.
        self._launching += len(started)
        asyncio.get_running_loop().call_soon(self._launch_all, started)
        return more

    def _launch_all(self, started: list[Delivery]) -> None:
        for d in started:
            self._launching -= 1
            self._launch(d)

    async def _start(self, good: list[Delivery], count: int
                     ) -> tuple[list[StartOutcome], list[Delivery]]:
        try:
            if count > 0:
                return await self.queue.start_and_read(self.read_conn, good, count)
            return await self.queue.start(good), []
        except BaseException:
            if self.admission is not None:  # not started after all: held again
                self.admission.put_back(good)
            raise

    def _launch(self, d: Delivery) -> None:
        """Hand the job to a job thread; ``_job_done`` gets its result back on the loop."""
        assert d.message is not None and self._threads is not None
        run = JobRun(d, asyncio.get_running_loop(), self._publish_progress,
                     self.settings.progress_interval_s)
        self.runs[d.entry_id] = run
        self.log.info("job started", job_id=d.job_id, model_type=d.message.model_type,
                      kind=d.kind, attempt=d.attempt, deliveries=d.deliveries)
        refusal = self.admission.refusal(d.entry_id) if self.admission is not None else None
        if d.message.model_type not in self.model_types:
            refusal = JobFailure(
                f"{self.settings.worker_type} does not serve {d.message.model_type!r}",
                code="unsupported_model_type")
        if refusal is not None:
            self.executing += 1
            self._job_done(run, 0.0, None, refusal)
            return
        extra = {"device": self.device}
        if self.admission is not None:
            extra.update(self.admission.context(d.entry_id))  # the GPU it was given
        ctx = JobContext(d.message.with_overrides(), self.settings.data_root,
                         self.settings.artifact_root, d.deliveries, d.attempt, extra=extra)
        self.executing += 1
        started = time.monotonic()
        self._threads.submit(run_framework, (self.framework, ctx, run),
                             lambda result, exc: self._job_done(run, started, result, exc))

    # ---- execute ---------------------------------------------------------------------------

    def _job_done(self, run: JobRun, started: float, result: Any,
                  exc: BaseException | None) -> None:
        """The job's code returned (or raised): free its slot and queue its final write."""
        self.executing -= 1
        self._slot_freed.set()
        if self.executing == 0:
            self._idle.set()
        if self.admission is not None:  # memory given back; peaks learnt
            self.admission.job_ended(run.delivery, result if exc is None else None)
        try:
            outcome = self._outcome(run, started, result, exc)
        except Exception as err:  # a bug of the worker's, not the job's: the job fails
            self.log.exception("could not tell how the job ended", job_id=run.delivery.job_id)
            outcome = Outcome.failure("worker_error", f"{type(err).__name__}: {err}")
        except BaseException:  # KeyboardInterrupt & co. from the job: the worker stops
            self.runs.pop(run.delivery.entry_id, None)
            raise
        if run.has_pending_report():
            task = asyncio.create_task(self._after_report(run, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._finalize(run, outcome)

    async def _after_report(self, run: JobRun, outcome: Outcome) -> None:
        try:
            await run.drain()  # the last progress report goes out before the final state
        except Exception:
            self.log.exception("last progress report failed", job_id=run.delivery.job_id)
        self._finalize(run, outcome)

    def _outcome(self, run: JobRun, started: float, result: Any,
                 exc: BaseException | None) -> Outcome:
        if exc is not None:
            return classify(exc, run)
        if not isinstance(result, dict):
            return Outcome.failure("job_error", f"framework returned {type(result).__name__}, "
                                   "not a result dict")
        result.setdefault("framework", self.framework.name)
        result.setdefault("framework_version", self.framework_version)
        result.setdefault("duration_s", round(time.monotonic() - started, 3))
        result.setdefault("worker", self.name)
        if run.delivery.message is not None:
            oom.annotate(run.delivery.message, result)
        return Outcome.success(result)

    # ---- finalize --------------------------------------------------------------------------

    def _finalize(self, run: JobRun, outcome: Outcome) -> None:
        """Queue the job's final write; the finisher writes it with others, then forgets the
        job (its entry stays leased until then)."""
        d = run.delivery
        if outcome.kind == "lost":
            self.log.warning("job lost its lease to another worker; result dropped",
                             job_id=d.job_id)
            self.runs.pop(d.entry_id, None)
        elif outcome.kind == "interrupted":
            if d.entry_id in self.runs:  # not handed back yet
                self._finish(self.queue.handback_call(d, "worker shutdown"), outcome)
        else:
            try:
                call = self._outcome_call(d, outcome)
            except TypeError as exc:  # orjson's JSONEncodeError: a result JSON cannot hold
                outcome = Outcome.failure(
                    "result_not_serializable", f"the job's result cannot be stored as JSON: "
                    f"{exc}")
                call = self.queue.fail_call(d, outcome.error)
            self._finish(call, outcome)

    def _outcome_call(self, d: Delivery, outcome: Outcome) -> Finish:
        if outcome.kind == "succeeded":
            return self.queue.complete_call(d, outcome.result)
        if outcome.kind == "cancelled":
            return self.queue.cancel_call(d)
        if oom.applies(d.message, outcome.error):
            return self._oom_call(d, outcome)
        max_attempts = self.settings.max_retries + 1
        if outcome.retryable and d.attempt < max_attempts:
            return self.queue.retry_call(d, outcome.error, self._backoff_ms(d.attempt))
        if outcome.retryable:
            outcome.error["message"] += f" (gave up after {d.attempt} attempts)"
        return self.queue.fail_call(d, outcome.error)

    def _oom_call(self, d: Delivery, outcome: Outcome) -> Finish:
        """CUDA OOM: again with batch_size halved, within its own bound (consumers/oom.py)."""
        assert d.message is not None
        overrides = oom.next_overrides(d.message, self.settings.oom_max_halvings)
        if overrides is None:
            return self.queue.fail_call(d, oom.final_error(d.message, outcome.error))
        return self.queue.retry_call(d, outcome.error, self._backoff_ms(1), overrides)

    def _backoff_ms(self, attempt: int) -> int:
        base = self.settings.retry_backoff_s * 2 ** (attempt - 1)
        capped = min(base, self.settings.retry_backoff_max_s)
        return int(capped * 1000 * random.uniform(0.8, 1.0))

    def _finish(self, call: Finish, outcome: Outcome) -> None:
        self._finishes.append((call, outcome))
        self._finish_added.set()

    async def _finish_loop(self) -> None:
        async def flush_when_added() -> None:
            await self._finish_added.wait()
            self._finish_added.clear()
            await self._flush_finishes()

        await self._forever("finish", flush_when_added, until=asyncio.Event())  # till cancelled

    async def _flush_finishes(self) -> None:
        """Write every queued final write in one round trip (retried while Redis is down).
        One flush at a time: the drain's flush waits for the finisher's write in flight, so a
        job whose result is being written is never handed back as unfinished."""
        async with self._flush_lock:
            await self._write_finishes()

    async def _write_finishes(self) -> None:
        items = list(self._finishes)
        self._finishes.clear()
        if not items:
            return
        try:
            results = await self._write_calls([call for call, _ in items])
        except Exception:  # a bug, not Redis: stop renewing, so the leases run out and the
            for call, _ in items:  # jobs are reclaimed and run again
                self.runs.pop(call.delivery.entry_id, None)
            self._slot_freed.set()
            raise
        for (call, outcome), refused in zip(items, results, strict=True):
            d = call.delivery
            self.runs.pop(d.entry_id, None)
            if isinstance(refused, NotOwner):
                self.log.warning("write fenced: the job is no longer ours", job_id=d.job_id,
                                 error=str(refused))
            elif refused is not None:  # its lease runs out; it is reclaimed and runs again
                self.log.error("final write refused", job_id=d.job_id, error=str(refused),
                               error_type=type(refused).__name__)
            else:
                self.log.info("job " + outcome.kind, job_id=d.job_id, **outcome.log_fields())
        self._slot_freed.set()  # fewer entries held: room to read more

    async def _write_calls(self, calls: list[Finish]) -> list[BaseException | None]:
        """``queue.finish``, retried while Redis is unavailable. A batch that Redis refuses
        for another reason is written one call at a time, so one bad write refuses only its
        own job."""
        backoff = _Backoff()
        while True:
            try:
                return await self.queue.finish(calls)
            except UNAVAILABLE as exc:
                await backoff.wait(self.log, "finish", exc)
            except RedisError as exc:
                if len(calls) == 1:
                    return [exc]
                return [(await self._write_calls([c]))[0] for c in calls]

    async def _publish_progress(self, d: Delivery, data: dict[str, Any]) -> bool:
        try:
            return await self.queue.progress(d, data)
        except NotOwner:
            run = self.runs.get(d.entry_id)
            if run is not None:
                run.lost = True
            return False
        except UNAVAILABLE:
            return False  # progress is best-effort; the next report goes out when Redis is back
        except (RedisError, TypeError) as exc:  # e.g. a report JSON cannot hold: dropped
            self.log.warning("progress report dropped", job_id=d.job_id, error=str(exc),
                             error_type=type(exc).__name__)
            return False

    # ---- maintenance -----------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        """Renew leases and promote due retries on a timer (every ``reclaim_every_s``, a third
        of the lease), so it runs even when the queue is idle."""
        await self._forever("maintenance", self._maintain)

    async def _maintain(self) -> None:
        await self._renew()
        await self.queue.promote_due(int(time.time() * 1000))
        await _sleep_unless(self.stopping, self.settings.reclaim_every_s)

    async def _renew(self) -> None:
        runs = list(self.runs.values())
        held = self.admission.held() if self.admission is not None else []
        if not runs and not held:
            return
        codes = await self.queue.renew([*(r.delivery for r in runs), *held])
        for d in held:  # waiting for GPU memory: leased like a running job
            if codes.get(d.entry_id, 0) == 1 and self.admission is not None:
                self.admission.drop(d.entry_id)
                self.log.warning("lease of a held job lost", job_id=d.job_id)
        for run in runs:
            code = codes.get(run.delivery.entry_id, 0)
            if code == 1:
                run.lost = True
                self.log.warning("lease lost", job_id=run.delivery.job_id)
            elif code == 2:
                run.cancel_requested = True

    async def _heartbeat_loop(self) -> None:
        async def beat() -> None:
            await _sleep_unless(self.stopping, self.settings.heartbeat_interval_s)
            await self._heartbeat_once()

        await self._forever("heartbeat", beat)

    async def _heartbeat_once(self) -> None:
        info = WorkerInfo(
            worker_id=self.name, worker_type=self.settings.worker_type,
            framework=self.framework.name, framework_version=self.framework_version,
            hostname=socket.gethostname(), pid=os.getpid(), started_at=self._started_at,
            heartbeat_at=int(time.time() * 1000),
            max_concurrent_jobs=self.slots,
            running_jobs=[r.delivery.job_id for r in self.runs.values()],
            gpus=self.admission.inventory() if self.admission is not None else self.gpus,
            state="draining" if self.stopping.is_set() else "running",
        )
        await registry.heartbeat(self.redis, self.keys, info,
                                 ttl_s=self.settings.heartbeat_interval_s * 3)

    async def _forever(self, what: str, step: Callable[[], Awaitable[None]],
                       until: asyncio.Event | None = None) -> None:
        """Run ``step`` over and over until ``until`` (default: the worker stopping) is set.
        A loop never dies: Redis unavailable, failing over or full backs off and retries; any
        other error is logged with its traceback, then backs off and retries too."""
        until = until or self.stopping
        backoff = _Backoff()
        while not until.is_set():
            try:
                await step()
                backoff.reset()
            except UNAVAILABLE as exc:
                await backoff.wait(self.log, what, exc)
            except Exception as exc:
                self.log.exception("worker loop error; retrying", during=what)
                await backoff.wait(self.log, what, exc, quiet=True)

    async def _retry_forever(self, what: str, fn: Callable[[], Awaitable[None]]) -> None:
        backoff = _Backoff()
        while True:
            try:
                await fn()
                return
            except UNAVAILABLE as exc:
                await backoff.wait(self.log, what, exc)


class _Backoff:
    """Exponential backoff for Redis outages: 0.1 s doubling to 5 s."""

    def __init__(self) -> None:
        self.delay = 0.1

    def reset(self) -> None:
        self.delay = 0.1

    async def wait(self, logger: Any, what: str, exc: BaseException, quiet: bool = False
                   ) -> None:
        if not quiet:
            logger.warning("redis unavailable; retrying", during=what, error=str(exc),
                           error_type=type(exc).__name__, retry_in_s=self.delay)
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
        if exc is not None and isinstance(exc, UNAVAILABLE):
            self.logger.warning("redis unavailable", during=self.what, error=str(exc))
            return True
        return False
