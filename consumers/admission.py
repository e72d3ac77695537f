"""GPU admission: a worker with GPU devices starts a job only when its memory estimate fits.

Usable memory of a device = NVML free - reservations not yet visible - ``GPU_HEADROOM_MB``.
A job reserves its estimate on the device it is given (``JobContext.extra["device"]``, e.g.
``cuda:1``: the fitting device with the most usable memory) from its start to its end. What
this process uses on the device (NVML per-process figure, above what it used while idle) counts
as the visible part of its reservations; where the driver does not tell (containers), the whole
reservation is subtracted, which is conservative.

Estimates, first that applies: the request's ``gpu_mem_mb``; the largest peak seen for the same
``<model_type>:<kind>:<batch_size>`` (Redis hash ``ai:{<type>}:gpu_peaks``, see
streams/gpu_peaks.py) times ``1 + GPU_ESTIMATE_MARGIN``; the table below, ``base + per_sample *
batch_size``. A request larger than every device fails at once (``gpu_memory_exceeded``); a
table or peak estimate that large is capped to the largest device (the job runs alone there, and
CUDA OOM halving takes over if it must).

A job that does not fit is *held*: its entry stays pending to this worker (status queued), its
lease is renewed like a running job's (``Worker._renew``), the worker reads no new entries while
it holds one, and admission is checked again at every job end and every ``ADMISSION_RECHECK_S``.
Held jobs are admitted first-come first-served (a later small job does not overtake an earlier
large one). Each check calls the ``wait`` script for each held entry: it writes a ``waiting`` event
when the reason changed, and lets go of an entry whose job was cancelled meanwhile. If the worker
dies, its held entries are reclaimed by other workers after the lease timeout, as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from consumers.frameworks.base import FailJob
from consumers.gpu import DeviceMemory, GpuDevices, GpuUnavailable
from consumers.oom import batch_size_of
from consumers.settings import WorkerSettings
from schemas.records import JobMessage
from schemas.status import JobKind
from schemas.workers import GpuInfo
from streams import gpu_peaks
from streams.consumer import QueueConsumer
from streams.delivery import Delivery
from streams.keys import QueueKeys

log = structlog.get_logger("aiq.admission")

# model type -> (base MiB, MiB per sample of a training batch), for the small configurations
# aiq builds by default. The base includes the CUDA context (~300-500 MiB) of the job's process.
TABLE: dict[str, tuple[int, int]] = {
    "bert": (700, 24), "transformer": (600, 16), "gpt": (800, 32),
    "resnet": (600, 24), "vgg": (1000, 48), "alexnet": (500, 12),
    "inception": (1000, 48), "mobilenet": (600, 24), "efficientnet": (800, 32),
    "gpu_sim": (100, 10),
    "command": (1024, 0),  # a command job that gives no gpu_memory_mb: 1 GiB, whatever it runs
}
DEFAULT_COST = (512, 16)
INFERENCE_FACTOR = 0.25  # no gradients, activations or optimizer state per sample


@dataclass(frozen=True, slots=True)
class Estimate:
    mb: int
    source: str  # request | peak | table
    peak_field: str  # the gpu_peaks field this job's peak is stored under
    capped: bool = False


def peak_field(message: JobMessage) -> str:
    return gpu_peaks.field(message.model_type, message.kind.value, batch_size_of(message))


def estimate(message: JobMessage, peaks: dict[str, int], margin: float) -> Estimate:
    """The memory estimate (MiB) of ``message`` (overrides applied)."""
    name = peak_field(message)
    if message.gpu_mem_mb:
        return Estimate(int(message.gpu_mem_mb), "request", name)
    if name in peaks:
        return Estimate(math.ceil(peaks[name] * (1 + margin)), "peak", name)
    base, per_sample = TABLE.get(message.model_type, DEFAULT_COST)
    factor = 1.0 if message.kind is JobKind.TRAINING else INFERENCE_FACTOR
    return Estimate(int(base + per_sample * factor * batch_size_of(message)), "table", name)


@dataclass(frozen=True, slots=True)
class Reservation:
    device: int
    estimate: Estimate


@dataclass(slots=True)
class _Held:
    delivery: Delivery
    reason: dict[str, Any] | None = None  # the last reason written (waiting event)
    reason_json: str = ""


class Admission:
    """GPU admission of one worker (used on its event loop only)."""

    def __init__(self, devices: GpuDevices, queue: QueueConsumer, redis: Redis,
                 keys: QueueKeys, settings: WorkerSettings, worker: str) -> None:
        self.devices = devices
        self.queue = queue
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.worker = worker
        self.log = log.bind(worker=worker)
        self._held: list[_Held] = []
        self._reserved: dict[str, Reservation] = {}  # entry id -> reservation
        self._rejected: dict[str, FailJob] = {}  # entry id -> why it fails at once
        self._baseline: dict[int, int] = {}  # device -> MiB this process used while idle there
        self._last: list[DeviceMemory] = []
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.checks = 0  # admission rounds with something to decide (tests, diagnostics)

    # ---- what the worker asks -----------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def held(self) -> list[Delivery]:
        return [h.delivery for h in self._held]

    def drop(self, entry_id: str) -> None:
        """The entry is no longer this worker's to hold (lease lost)."""
        self._held = [h for h in self._held if h.delivery.entry_id != entry_id]

    def put_back(self, deliveries: list[Delivery]) -> None:
        """Starting what ``admit`` returned failed (Redis down): undo it; they are held again,
        first in line, and decided afresh at the next check."""
        held = {h.delivery.entry_id for h in self._held}
        back = [_Held(d) for d in deliveries if d.entry_id not in held]
        for d in deliveries:
            self._reserved.pop(d.entry_id, None)
            self._rejected.pop(d.entry_id, None)
        self._held = [*back, *self._held]

    def refusal(self, entry_id: str) -> FailJob | None:
        return self._rejected.pop(entry_id, None)

    def context(self, entry_id: str) -> dict[str, Any]:
        """What the job's JobContext.extra gets: the device it was given."""
        res = self._reserved.get(entry_id)
        if res is None:
            return {}
        return {"device": f"cuda:{res.device}", "gpu_index": res.device,
                "gpu_estimate_mb": res.estimate.mb}

    def release(self, entry_id: str) -> Reservation | None:
        """The job ended (or never started): its reservation is given back, held jobs are
        checked again at once."""
        self._rejected.pop(entry_id, None)
        res = self._reserved.pop(entry_id, None)
        self._changed.set()
        return res

    def job_ended(self, d: Delivery, result: Any) -> None:
        """Release, and learn from a successful result: ``gpu_peak_mb`` (reported by the
        framework) raises the stored peak of the job's kind; the result records its device."""
        res = self.release(d.entry_id)
        if res is None or not isinstance(result, dict):
            return
        peak = result.get("gpu_peak_mb")
        result.setdefault("gpu", {"device": f"cuda:{res.device}", "estimate_mb": res.estimate.mb,
                                  "estimate_source": res.estimate.source})
        if isinstance(peak, int | float) and not isinstance(peak, bool) and peak > 0:
            task = asyncio.create_task(self._record_peak(res.estimate.peak_field, int(peak)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _record_peak(self, name: str, peak: int) -> None:
        try:
            await gpu_peaks.record(self.redis, self.keys, name, peak, self.settings.limits)
        except (RedisError, OSError) as exc:  # best effort: the next job reports it again
            self.log.warning("gpu peak not recorded", field=name, error=str(exc))

    async def wait(self, stopping: asyncio.Event) -> None:
        """Until a job ended since the last check, the recheck interval passes or the worker
        stops."""
        waits = [asyncio.ensure_future(self._changed.wait()),
                 asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=self.settings.admission_recheck_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def inventory(self) -> list[GpuInfo]:
        """The devices for the worker's heartbeat: NVML's free and what admission reserved."""
        devices = self._read()
        reserved = self._unseen(devices)
        return [GpuInfo(index=d.index, name=d.name, total_mb=d.total_mb, free_mb=d.free_mb,
                        reserved_mb=reserved.get(d.index, 0)) for d in devices]

    # ---- admission ----------------------------------------------------------------------------

    async def admit(self, new: list[Delivery], free_slots: int) -> list[Delivery]:
        """Of the held entries and ``new`` (in that order), those to start now, each with a
        device reserved, plus those that fail at once (``refusal``). The rest are held. Never
        raises for Redis being down: what could not be written is written at the next check."""
        async with self._lock:
            known = {h.delivery.entry_id for h in self._held} | set(self._reserved)
            candidates = [*self._held, *(_Held(d) for d in new if d.entry_id not in known)]
            if not candidates:
                return []
            self._changed.clear()  # what ends from now on wakes the next check
            peaks = await self._peaks(candidates)
            start, waiting = self._decide(candidates, peaks, free_slots)
            if waiting:
                await self._write_waiting(waiting)
            self.checks += 1
            return start

    async def _peaks(self, candidates: list[_Held]) -> dict[str, int]:
        fields = sorted({peak_field(self._message(h.delivery)) for h in candidates
                         if not self._message(h.delivery).gpu_mem_mb})
        try:
            return await gpu_peaks.read(self.redis, self.keys, fields)
        except (RedisError, OSError) as exc:  # Redis down: the table serves this round
            self.log.warning("gpu peaks unreadable; table estimates", error=str(exc))
            return {}

    @staticmethod
    def _message(d: Delivery) -> JobMessage:
        assert d.message is not None
        return d.message.with_overrides()

    def _read(self) -> list[DeviceMemory]:
        try:
            self._last = self.devices.devices()
        except GpuUnavailable as exc:
            self.log.error("GPU memory unreadable; using the last reading", error=str(exc))
        return self._last

    def _unseen(self, devices: list[DeviceMemory]) -> dict[int, int]:
        """Per device: MiB reserved by this worker's running jobs that NVML does not show yet."""
        out = {}
        for dev in devices:
            promised = sum(r.estimate.mb for r in self._reserved.values()
                           if r.device == dev.index)
            used = dev.process_used_mb
            if promised == 0:
                self._baseline[dev.index] = used or 0  # idle here: what the process keeps
                out[dev.index] = 0
                continue
            visible = max(0, (used or 0) - self._baseline.get(dev.index, 0)) if used else 0
            out[dev.index] = max(0, promised - visible)
        return out

    def _decide(self, candidates: list[_Held], peaks: dict[str, int], free_slots: int
                ) -> tuple[list[Delivery], list[tuple[_Held, dict[str, Any]]]]:
        """Synchronous, so two admission rounds never interleave their decisions."""
        devices = self._read()
        headroom = self.settings.gpu_headroom_mb
        unseen = self._unseen(devices)
        usable = {d.index: d.free_mb - unseen[d.index] - headroom for d in devices}
        largest = max((d.total_mb for d in devices), default=0) - headroom
        start: list[Delivery] = []
        waiting: list[tuple[_Held, dict[str, Any]]] = []
        held: list[_Held] = []
        ahead: str | None = None
        slots = free_slots
        for h in candidates:
            d = h.delivery
            if slots <= 0 or not devices:
                held.append(h)  # no slot: not a memory matter, no event
                continue
            est = estimate(self._message(d), peaks, self.settings.gpu_estimate_margin)
            if est.mb > largest:
                if est.source == "request":
                    self._rejected[d.entry_id] = self._too_big(est, devices)
                    start.append(d)
                    slots -= 1
                    continue
                est = replace(est, mb=max(largest, 0), capped=True)
            fits = [i for i, free in usable.items() if free >= est.mb]
            if ahead is None and fits:
                device = max(fits, key=lambda i: usable[i])
                usable[device] -= est.mb
                unseen[device] += est.mb
                self._reserved[d.entry_id] = Reservation(device, est)
                start.append(d)
                slots -= 1
                continue
            waiting.append((h, self._reason(d, est, devices, unseen, usable, ahead)))
            held.append(h)
            ahead = ahead or d.job_id
        self._held = held
        return start, waiting

    def _too_big(self, est: Estimate, devices: list[DeviceMemory]) -> FailJob:
        biggest = max(devices, key=lambda d: d.total_mb)
        headroom = self.settings.gpu_headroom_mb
        return FailJob(
            f"the job asks for {est.mb} MiB of GPU memory (gpu_mem_mb) but the largest GPU of "
            f"this worker, cuda:{biggest.index} ({biggest.name}), has {biggest.total_mb} MiB "
            f"({biggest.total_mb - headroom} MiB usable with GPU_HEADROOM_MB={headroom}); it "
            "can never run here", code="gpu_memory_exceeded")

    def _reason(self, d: Delivery, est: Estimate, devices: list[DeviceMemory],
                unseen: dict[int, int], usable: dict[int, int], ahead: str | None
                ) -> dict[str, Any]:
        rows: list[dict[str, Any]] = [{"index": x.index, "name": x.name, "total_mb": x.total_mb,
                 "free_mb": x.free_mb, "reserved_mb": unseen[x.index],
                 "usable_mb": max(usable[x.index], 0)} for x in devices]
        if ahead is not None:
            why = "behind_waiting_job"
            text = f"waits behind {ahead}, which waits for GPU memory"
        else:
            why = "gpu_memory"
            best = max(rows, key=lambda r: r["usable_mb"])
            text = (f"needs {est.mb} MiB of GPU memory ({est.source} estimate"
                    f"{', capped to the largest GPU' if est.capped else ''}); at most "
                    f"{best['usable_mb']} MiB usable now, on cuda:{best['index']}")
        return {"reason": why, "message": text, "worker": self.worker, "entry_id": d.entry_id,
                "needed_mb": est.mb, "estimate_source": est.source, "devices": rows,
                "behind": ahead}

    def _changed_enough(self, old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
        if old is None:
            return True
        if any(old[k] != new[k] for k in ("reason", "needed_mb", "behind", "estimate_source")):
            return True
        if len(old["devices"]) != len(new["devices"]):
            return True
        step = self.settings.waiting_event_min_change_mb
        return any(abs(a["usable_mb"] - b["usable_mb"]) >= max(step, 1)
                   for a, b in zip(old["devices"], new["devices"], strict=True))

    async def _write_waiting(self, waiting: list[tuple[_Held, dict[str, Any]]]) -> None:
        """Call the wait script for every held entry: a new reason when it changed enough,
        else the one written before (so the script only checks the job is still waiting)."""
        items: list[tuple[Delivery, str]] = []
        for h, reason in waiting:
            if self._changed_enough(h.reason, reason):
                h.reason, h.reason_json = reason, orjson.dumps(reason).decode()
            items.append((h.delivery, h.reason_json))
        try:
            results = await self.queue.wait(items)
        except (RedisError, OSError) as exc:  # Redis down: held still, written next check
            for h, _ in waiting:
                h.reason = None  # so the next check writes its reason
            self.log.warning("waiting state not written", error=str(exc))
            return
        for (h, reason), res in zip(waiting, results, strict=True):
            d = h.delivery
            if isinstance(res, Exception):
                self.log.info("held entry let go", job_id=d.job_id, reason=str(res))
                self.drop(d.entry_id)
            elif res:
                self.log.info("job waits", job_id=d.job_id, why=reason["reason"],
                              needed_mb=reason["needed_mb"],
                              usable_mb=[r["usable_mb"] for r in reason["devices"]])

    async def close(self) -> None:
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self._tasks), timeout=5)
        self.devices.close()

