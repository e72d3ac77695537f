"""The worker, in the order a job goes through it: read → admit → start → run → final write;
beside that path, lease renewal and retry promotion, heartbeats, and the graceful stop
(docs/ARCHITECTURE.md, "Life of a job"). Reads and reclaims ask for at most the free slots;
expired entries of dead workers are swept back before new ones are read (consumers/reclaim.py).
At most twice ``max_concurrent_jobs`` entries are this worker's at once (``capacity``): what a
SIGKILL can strand. Short jobs are read ahead: while the recent jobs' run time says a slot frees
within ``READ_AHEAD_S``, up to ``max_concurrent_jobs`` more jobs are started and queued for the
job threads (within the same bound), so a thread that ends a job takes the next one at once,
without a round trip through the loop and Redis; a job read ahead that waits too long is handed
back (``_take_back_stale``). Every loop survives what Redis does to it (consumers/loops.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from secrets import token_hex
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from consumers.admission import Admission
from consumers.artifact_store import open_store
from consumers.command.runner import CommandRunner
from consumers.cpu_admission import NoAdmission
from consumers.ending import ending_for
from consumers.execution import Outcome, classify, run_command, run_framework, succeeded
from consumers.final_writes import GATHER_S, FinalWrites
from consumers.frameworks.base import FailJob, Framework, JobContext
from consumers.gpu import GpuDevices
from consumers.loops import forever, sleep_unless, unless_unavailable, until_done
from consumers.metrics import WorkerMetrics, WorkerState, outcome_of
from consumers.progress import JobRun, ProgressPublisher
from consumers.reclaim import Reclaimer
from consumers.renewal import renew_leases, watch_cancels
from consumers.settings import WorkerSettings
from consumers.shutdown import hand_back, stop_reading
from consumers.threads import JobThreads
from schemas.catalogue import CATALOGUE, STATE, Device
from schemas.status import COMMAND_MODEL_TYPE, JobKind
from schemas.workers import GpuInfo, WorkerInfo
from streams import registry
from streams.consumer import QueueConsumer, StartOutcome
from streams.delivery import Delivery
from streams.endings import Fail, Handback, RenewCode
from streams.errors import UNAVAILABLE
from streams.keys import MODEL_KINDS, QueueKeys

log = structlog.get_logger("aiq.worker")
# Entries read (and started) per round trip at most: smaller batches keep several round trips
# in flight under load, so Redis runs one batch's scripts while this process launches another.
READ_CHUNK = 64
RUN_TIME_WEIGHT = 0.2  # weight of the newest job in the moving average of run times
READ_AHEAD = "read ahead, not started in time"  # the reason of a stale read-ahead's hand-back


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
        self.artifacts = open_store(settings)  # models and checkpoints (ARTIFACT_URI)
        self.framework = framework
        self.framework_version = framework.version()
        self.redis = redis
        self.read_conn = read_conn  # blocking XREADGROUP holds its own connection
        self.name = name or consumer_name()
        self.keys = QueueKeys(settings.worker_type, settings.redis_prefix)
        # The streams this worker serves: the command stream only with COMMAND_JOBS on.
        kinds = (*MODEL_KINDS, JobKind.COMMAND) if settings.command_jobs else MODEL_KINDS
        self.queue = QueueConsumer(redis, self.keys, self.name, settings.limits,
                                   settings.max_deliveries, settings.priority_weight,
                                   self.keys.streams_of(kinds))
        self.commands = CommandRunner(settings, self.artifacts, self.queue, self.name) \
            if settings.command_jobs else None
        self.slots = settings.max_concurrent_jobs
        self.runs: dict[str, JobRun] = {}  # entry id -> job in flight (running or finishing)
        self.executing = 0  # jobs handed to the job threads: running, or read ahead (queued)
        self._run_s: float | None = None  # moving average of recent jobs' run times
        self._launching = 0  # started jobs whose launch is scheduled on the loop (_launch_all)
        self.gpus = gpus or []
        self.model_types = CATALOGUE[settings.worker_type].model_types | (
            {COMMAND_MODEL_TYPE} if settings.command_jobs else set())
        self.metrics = WorkerMetrics(settings.worker_type, self.model_types)  # METRICS_PORT
        self.metrics.watch(self._metrics_state)
        # CPU worker types run on the CPU even where a GPU is visible.
        self.device = "cuda" if CATALOGUE[settings.worker_type].device is Device.GPU else "cpu"
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self._slot_freed = asyncio.Event()  # a slot, or room for more entries, came free
        self._batch: list[Delivery] = []  # read, not yet started
        self._idle_wait = False  # the read loop waits for entries or a slot (_waiting_idle)
        self._threads: JobThreads | None = None  # made in run(), on the serving loop
        self._tasks: set[asyncio.Task[None]] = set()  # last progress reports in flight
        self._idle = asyncio.Event()  # set when no job code runs
        self._started_at = int(time.time() * 1000)
        # The installed plugin that declares this type (None: a type added by code, e.g. a
        # benchmark's simulated one): announced at start and checked with each heartbeat.
        self.plugin = STATE.plugins.get(settings.worker_type)
        self._announced = False
        self._gpus_seen: list[GpuInfo] = list(self.gpus)  # the last heartbeat's inventory
        self.log = log.bind(worker=self.name, worker_type=settings.worker_type)
        self.reclaimer = Reclaimer(self.queue, settings.reclaim_every_s, settings.lease_ms,
                                   settings.block_ms, self.log,
                                   orphans_every_s=settings.orphan_check_s or None,
                                   orphan_idle_ms=int(settings.heartbeat_interval_s * 1000))
        self._publisher = ProgressPublisher(self.queue, self.runs, self.log)
        self.final_writes = FinalWrites(self.queue, self.runs, self.log, self._slot_freed.set,
                                        self._endings_soon)
        # GPU admission: on for any worker with GPU devices (real, or scripted by settings).
        self.admission: Admission | NoAdmission = (
            Admission(devices, self.queue, redis, self.keys, settings, self.name)
            if devices is not None else NoAdmission(self.gpus))

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until ``stop()``; then drain within the grace period and hand back the rest."""
        self._threads = JobThreads(asyncio.get_running_loop(), self.slots,
                                   self.settings.job_thread_policy)
        if self._threads.policy_error:
            self.log.warning("job threads keep the normal scheduling policy",
                             asked=self.settings.job_thread_policy,
                             error=self._threads.policy_error)
        await until_done(self.log, "create groups", self.queue.ensure_groups)
        await until_done(self.log, "register", self._heartbeat_once)
        await until_done(self.log, "publish limits", lambda: registry.publish_limits(
            self.redis, self.keys, self.settings.type_limits))
        self.log.info("worker started", framework=self.framework.name,
                      framework_version=self.framework_version, slots=self.slots,
                      cpus=self.settings.worker_cpus or "all",
                      job_threads=self._threads.policy,
                      event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0])
        loops = [self._forever("read", self._read_step),
                 self._forever("maintenance", self._maintain),
                 self._forever("heartbeat", self._heartbeat),
                 self._forever("cancel watch", lambda: watch_cancels(
                     self.queue, self.runs, self.stopping, self.settings.cancel_check_s)),
                 self.final_writes.loop()]
        background = [asyncio.create_task(c) for c in loops]
        await self.stopping.wait()
        await stop_reading(background[0], self._idle_wait)
        await self._drain()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self._deregister()
        await self.admission.close()
        self._threads.shutdown()
        self.stopped.set()
        self.log.info("worker stopped")

    def stop(self) -> None:
        self.stopping.set()

    async def _forever(self, what: str, step: Any) -> None:
        await forever(self.log, what, step, until=self.stopping)

    # ---- 1. read: held GPU jobs, then expired entries, then new ones -----------------------

    @property
    def free_slots(self) -> int:
        """A slot frees when the job's code returns; its final write is then in flight (its
        entry stays leased until that write lands), so reading goes on meanwhile. Read-ahead
        adds room for jobs that wait in the threads' queue."""
        return self.slots + self.read_ahead - self.executing - self._launching

    @property
    def read_ahead(self) -> int:
        """How many jobs may wait for a thread: as many as the slots free within
        ``READ_AHEAD_S`` at the recent jobs' run time, at most one per slot; none before a
        job has run, with GPU admission (memory is reserved per running job), or when off."""
        window = self.settings.read_ahead_s
        if not window or self._run_s is None or not isinstance(self.admission, NoAdmission):
            return 0
        return min(self.slots, int(self.slots * window / max(self._run_s, 1e-6)))

    @property
    def capacity(self) -> int:
        """How many more entries this worker takes now: the free slots, but never more than
        twice ``slots`` entries held at once (running, launching, or final write in flight), so a
        SIGKILL strands at most that many."""
        held = len(self.runs) + self._launching
        return min(self.free_slots, 2 * self.slots - held)

    @property
    def _refill_at(self) -> int:
        """Room needed before reading again: one entry, except while jobs read ahead still
        wait for a thread (none idles meanwhile): then half the read-ahead, so that under a
        load of short jobs each round trip starts and reads several, not one or two."""
        if self.executing + self._launching <= self.slots:
            return 1
        return max(1, self.read_ahead // 2)

    async def _read_step(self) -> None:
        """Take work while there is room: held GPU jobs first, then expired entries (a reclaim
        sweep), then new entries. Blocks for new entries when idle; under load, starts each
        batch and reads the next one in the same round trip."""
        if not self._batch and self.capacity < self._refill_at:
            self._slot_freed.clear()
            if self.capacity < self._refill_at:
                with self._waiting_idle():
                    await self._slot_freed.wait()
            return
        try:
            if not self._batch and self.admission.holding:
                # Holding a job for GPU memory: take nothing new; check it again at a job
                # end or on the recheck timer.
                await self.admission.wait(self.stopping)
                await self._take([])
                return
            if not self._batch and self.reclaimer.due():
                await self._reclaim()
                return
            if not self._batch:
                block_ms = self.reclaimer.block_ms(self.settings.block_ms)
                with self._waiting_idle():
                    self._batch = await self.queue.read(self.read_conn,
                                                        min(self.capacity, READ_CHUNK), block_ms)
                if not self._batch and self.settings.burst and await self._all_done():
                    self.log.info("queue empty; stopping (BURST)")
                    self.stop()
                    return
            self._batch = await self._take(self._batch, read_more=True)
        except UNAVAILABLE:
            raise  # the same batch is started again once Redis is back
        except Exception as exc:
            if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                self.log.warning("consumer group missing (Redis restarted?); recreating")
                await until_done(self.log, "create groups", self.queue.ensure_groups)
                return
            self._batch = []  # entries that cannot be started: reclaimed after the lease
            raise

    async def _all_done(self) -> bool:
        """Burst mode's end: nothing of this worker's in flight and nothing left in Redis."""
        return (not self.runs and not self._launching and not self.admission.held()
                and await self.queue.is_empty())

    @contextlib.contextmanager
    def _waiting_idle(self) -> Iterator[None]:
        """Blocked for new entries or a free slot: a stop may cancel the read here."""
        self._idle_wait = True
        try:
            yield
        finally:
            self._idle_wait = False

    async def _reclaim(self) -> None:
        """Take back up to ``capacity`` expired entries of dead workers, going on with the
        sweep under way; it ends when every pending list was read to its end."""
        batch = await self.reclaimer.next_batch(min(self.capacity, READ_CHUNK))
        # An entry of this worker's own whose renewal is late is still in flight here.
        batch = [d for d in batch if d.entry_id not in self.runs]
        if batch:
            self.log.info("reclaimed entries", entries=[d.entry_id for d in batch])
            self.metrics.took_back(len(batch))
            await self._take(batch)

    async def _take(self, batch: list[Delivery], read_more: bool = False) -> list[Delivery]:
        """Steps 2 and 3 for a batch: dead-letter what is malformed, admit, start, launch.
        With ``read_more``, also read (without blocking) as many entries as slots stay free,
        in the same round trip as the start; they are returned, to be taken next."""
        good = await self._dead_letter_malformed(batch)
        good = await self.admission.admit(good, self.capacity)
        read_on = read_more and not self.admission.holding
        count = min(self.capacity - len(good), READ_CHUNK) if read_on else 0
        if not good:
            return []
        outcomes, more = await self._start(good, count)
        self._launch_started(outcomes)
        return more

    async def _dead_letter_malformed(self, batch: list[Delivery]) -> list[Delivery]:
        for d in batch:
            if d.message is None and await self.queue.dead_letter(d, d.parse_error):
                self.log.warning("malformed entry dead-lettered", entry_id=d.entry_id,
                                 stream=d.stream, reason=d.parse_error)
        return [d for d in batch if d.message is not None]

    # ---- 2. admit (GPU workers: consumers/admission.py) and 3. start -----------------------

    async def _start(self, good: list[Delivery], count: int
                     ) -> tuple[list[StartOutcome], list[Delivery]]:
        try:
            if count > 0:
                return await self.queue.start_and_read(self.read_conn, good, count)
            return await self.queue.start(good), []
        except BaseException:
            self.admission.put_back(good)  # not started after all: held again
            raise

    def _endings_soon(self) -> int:
        """How many endings the next final write should carry: the one just queued, and
        those of the jobs in the threads (running or read ahead) that the recent run time
        says end within ``GATHER_S``: at most half the slots, and none unless two or more
        are due (a worker with one job left, or only long ones, writes at once)."""
        if self._run_s is None:
            return 1
        running = min(self.executing, self.slots)
        due = min(int(running * GATHER_S / max(self._run_s, 1e-6)), self.executing,
                  self.slots // 2)
        return 1 + due if due >= 2 else 1

    def _launch_started(self, outcomes: list[StartOutcome]) -> None:
        started = []
        for outcome in outcomes:
            d = outcome.delivery
            if outcome.started:
                started.append(d)
                continue
            self.admission.release(d.entry_id)
            self.log.info("entry not started", job_id=d.job_id, entry_id=d.entry_id,
                          code=outcome.code, detail=outcome.detail)
        # Launched on the next loop turn: the caller first sends the next start + read, so
        # Redis works on it while this process hands these jobs to their threads.
        self._launching += len(started)
        asyncio.get_running_loop().call_soon(self._launch_all, started)

    def _launch_all(self, started: list[Delivery]) -> None:
        for d in started:
            self._launching -= 1
            self._launch(d)

    # ---- 4. run: the framework's code in a job thread --------------------------------------

    def _launch(self, d: Delivery) -> None:
        """Hand the job to a job thread; ``_job_done`` gets its result back on the loop."""
        assert d.message is not None and self._threads is not None
        run = JobRun(d, asyncio.get_running_loop(), self._publisher,
                     self.settings.progress_interval_s,
                     self.settings.timeout_of(d.message.timeout_s))
        self.runs[d.entry_id] = run
        self.log.info("job started", job_id=d.job_id, model_type=d.message.model_type,
                      kind=d.kind, attempt=d.attempt, deliveries=d.deliveries)
        self.metrics.started(d, int(time.time() * 1000))
        refusal = self.admission.refusal(d.entry_id)
        if d.message.model_type not in self.model_types:  # a command job: COMMAND_JOBS off
            refusal = FailJob(
                f"{self.settings.worker_type} does not serve {d.message.model_type!r}",
                code="unsupported_model_type")
        if d.input_error:
            refusal = FailJob(d.input_error, code="record_malformed")
        if refusal is not None:
            self.executing += 1
            self._job_done(run, None, refusal)
            return
        extra = {"device": self.device, **self.admission.context(d.entry_id)}  # its GPU
        ctx = JobContext(d.message.with_overrides(), self.settings.data_root,
                         self.settings.artifact_root, d.deliveries, d.attempt, extra=extra,
                         store=self.artifacts)
        self.executing += 1
        call: tuple[Any, tuple[Any, ...]] = (run_framework, (self.framework, ctx, run))
        if self.commands is not None and d.kind is JobKind.COMMAND:
            call = (run_command, (self.commands, ctx, run))  # consumers/command/runner.py
        self._threads.submit(*call, lambda result, exc: self._job_done(run, result, exc))

    def _job_done(self, run: JobRun, result: Any, exc: BaseException | None) -> None:
        """The job's code returned (or raised): free its slot and queue its final write."""
        self.executing -= 1
        ran = run.ran_s()
        if run.begun:  # what read-ahead goes by
            self._run_s = ran if self._run_s is None else \
                self._run_s + RUN_TIME_WEIGHT * (ran - self._run_s)
        self._slot_freed.set()
        if self.executing == 0:
            self._idle.set()
        self.admission.job_ended(run.delivery, result if exc is None else None)  # peaks
        try:
            outcome = classify(exc, run) if exc is not None else succeeded(run, result, {
                "framework": self.framework.name, "framework_version": self.framework_version,
                "duration_s": round(ran, 3), "worker": self.name})
        except Exception as err:  # a bug of the worker's, not the job's: the job fails
            self.log.exception("could not tell how the job ended", job_id=run.delivery.job_id)
            outcome = Outcome.failure("worker_error", f"{type(err).__name__}: {err}")
        except BaseException:  # KeyboardInterrupt & co. from the job: the worker stops
            self.runs.pop(run.delivery.entry_id, None)
            raise
        outcome.run_s = ran
        if run.has_pending_report():
            task = asyncio.create_task(self._after_report(run, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._end(run, outcome)

    async def _after_report(self, run: JobRun, outcome: Outcome) -> None:
        try:
            await run.drain()  # the last progress report goes out before the final state
        except Exception:
            self.log.exception("last progress report failed", job_id=run.delivery.job_id)
        self._end(run, outcome)

    # ---- 5. final write (consumers/ending.py picks it, consumers/final_writes.py writes it) -

    def _end(self, run: JobRun, outcome: Outcome) -> None:
        """Queue the job's final write; the job leaves ``runs`` once it is written (its entry
        stays leased until then)."""
        d = run.delivery
        if outcome.kind == "lost":
            self.log.warning("job lost its lease to another worker; result dropped",
                             job_id=d.job_id)
            self.runs.pop(d.entry_id, None)
            self.metrics.ended(d, "lost", outcome.run_s)
            return
        if outcome.kind == "interrupted" and (run.handed_back or d.entry_id not in self.runs):
            self.metrics.ended(d, "handed_back", outcome.run_s)
            return  # already handed back (by the drain, or as a stale read-ahead)
        try:
            ending = ending_for(d, outcome, self.settings)
        except TypeError as exc:  # orjson's JSONEncodeError: a result JSON cannot hold
            outcome = Outcome.failure(
                "result_not_serializable", f"the job's result cannot be stored as JSON: {exc}")
            ending = Fail.of(d, outcome.error)
        assert ending is not None
        self.metrics.ended(d, outcome_of(ending), outcome.run_s, outcome.error.get("code", ""))
        self.final_writes.add(ending, outcome)

    # ---- beside the path: renew leases, promote due retries --------------------------------

    async def _maintain(self) -> None:
        """Renew leases and promote due retries on a timer (every ``reclaim_every_s``, a third
        of the lease), so it runs even when the queue is idle."""
        codes = await renew_leases(self.queue, self.runs, self.admission, self.log)
        lost = sum(code is RenewCode.LOST for code in codes.values())
        self.metrics.renewed(len(codes) - lost, lost)
        await self.queue.promote_due(int(time.time() * 1000))
        await sleep_unless(self.stopping, self.settings.reclaim_every_s)

    # ---- heartbeat -------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        await sleep_unless(self.stopping, self.settings.heartbeat_interval_s)
        await self._heartbeat_once()
        self._take_back_stale()

    def _take_back_stale(self) -> None:
        """Hand back the jobs read ahead that still wait for a thread after
        ``read_ahead_stale_s`` (the jobs before them turned out long): another worker may run
        them now. A job whose thread has begun it stays."""
        limit = time.monotonic() - self.settings.read_ahead_stale_s
        for run in list(self.runs.values()):
            if not run.begun and run.queued_at < limit and not run.handed_back \
                    and run.take_back():
                self.log.info("read-ahead job handed back", job_id=run.delivery.job_id)
                self.final_writes.add(Handback(run.delivery, READ_AHEAD), Outcome("interrupted"))

    def _metrics_state(self) -> WorkerState:
        """The gauges of a scrape (called in the metrics server's thread: plain reads)."""
        return WorkerState(running=min(self.executing, self.slots), slots=self.slots,
                           free=max(self.slots - self.executing - self._launching, 0),
                           gpus=self._gpus_seen)

    async def _heartbeat_once(self) -> None:
        self._gpus_seen = gpus = self.admission.inventory()
        info = WorkerInfo(
            worker_id=self.name, worker_type=self.settings.worker_type,
            framework=self.framework.name, framework_version=self.framework_version,
            hostname=socket.gethostname(), pid=os.getpid(), started_at=self._started_at,
            heartbeat_at=int(time.time() * 1000), max_concurrent_jobs=self.slots,
            running_jobs=[r.delivery.job_id for r in self.runs.values()],
            gpus=gpus, command_jobs=self.commands is not None,
            state="draining" if self.stopping.is_set() else "running")
        await registry.heartbeat(self.redis, self.keys, info,
                                 ttl_s=self.settings.heartbeat_interval_s * 3)
        if self.plugin is not None:  # the declaration gateways learn the type from
            await registry.announce(self.redis, self.keys, self.plugin, self.name,
                                    self.settings.redis_prefix, force=not self._announced)
            self._announced = True

    # ---- graceful stop: drain, hand back the rest, deregister ------------------------------

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # launches the read loop scheduled (_launch_all) happen first
        if self.executing:
            self.log.info("draining", running=self.executing,
                          grace_s=self.settings.shutdown_grace_s)
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.settings.shutdown_grace_s)
        if self._tasks:  # last progress reports of jobs that just ended
            await asyncio.wait(list(self._tasks), timeout=5)
        with contextlib.suppress(TimeoutError):  # what finished in time is recorded as such
            await asyncio.wait_for(self.final_writes.flush(), timeout=10)  # Redis may be down
        commands = any(r.delivery.kind is JobKind.COMMAND for r in self.runs.values())
        await hand_back(self.queue, self.runs, self.log)
        if commands and self.executing:  # their programs get SIGTERM, then SIGKILL: wait
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(),
                                       self.settings.command_kill_grace_s + 5)

    async def _deregister(self) -> None:
        with unless_unavailable(self.log, "deregister"):
            await registry.deregister(self.redis, self.keys, self.name)
