"""A worker's own Prometheus metrics, served on ``METRICS_PORT`` (off by default).

Observed on the worker's loop as jobs go (a histogram observation or a counter increment: no I/O,
nothing in the job's thread); served by prometheus-client's HTTP server in a thread of its own,
so a scrape never waits for the loop nor the loop for a scrape. Gauges are read at scrape time
from the worker's counts (plain integers) and from the GPU inventory of its last heartbeat
(``HEARTBEAT_INTERVAL_S`` old at most; NVML is not called from the scrape's thread). Every
series carries ``worker_type``; none a job id (docs/MONITORING.md lists them all).
"""

from __future__ import annotations

import contextlib
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from schemas.status import JobKind
from schemas.workers import GpuInfo
from streams.delivery import Delivery
from streams.endings import Complete, ConfirmCancel, Ending, Fail, Handback, Retry

# No ``*_created`` series beside every counter and histogram: Prometheus does not need them
# (counter resets are seen from the values), and they would double the series of each.
disable_created_metrics()  # type: ignore[no-untyped-call]

MIB = 1024 * 1024
# Seconds: a no-op job takes milliseconds, a training job hours.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                    600, 1800, 3600, 7200, 14400, 43200, 86400)
WAIT_BUCKETS = DURATION_BUCKETS
OTHER = "other"  # the model_type label of an entry naming a model type the worker does not serve

Outcome = Literal["succeeded", "failed", "retried", "cancelled", "handed_back", "lost"]
_ERRORS = frozenset({"failed", "retried"})
_KINDS = {kind: kind.value for kind in JobKind}  # .value of an enum member is slow in 3.11
_OUTCOMES: dict[type[Ending], Outcome] = {
    Complete: "succeeded", Fail: "failed", Retry: "retried", ConfirmCancel: "cancelled",
    Handback: "handed_back",
}


def outcome_of(ending: Ending) -> Outcome:
    """The ``outcome`` label of a run that ends in ``ending``."""
    return _OUTCOMES[type(ending)]


class JobHistogram(Collector):
    """A histogram observed once per job on the worker's loop: a bucket index by bisection and
    two additions under one lock, about a fifth of prometheus-client's ``Histogram`` (which
    locks every bucket and sum, after a ``labels()`` lookup that costs more still). The scrape
    thread copies the counts under the same lock, so a scrape sees each series whole."""

    def __init__(self, name: str, doc: str, labels: list[str], bounds: tuple[float, ...]
                 ) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self._les = [*(repr(float(b)) for b in bounds), "+Inf"]  # as prometheus-client: 1.0
        self._series: dict[tuple[str, ...], list[float]] = {}  # labels -> bucket counts, sum
        self._lock = threading.Lock()

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self._series.get(labels)
        if counts is None:
            counts = self._series.setdefault(labels, [0] * (len(self.bounds) + 2))
        i = bisect_left(self.bounds, value)  # the first bucket with value <= its bound
        with self._lock:
            counts[i] += 1
            counts[-1] += value

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            series = [(labels, list(counts)) for labels, counts in self._series.items()]
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, counts in series:
            cumulative = list(accumulate(counts[:-1]))
            family.add_metric(list(labels), list(zip(self._les, cumulative, strict=True)),
                              counts[-1])
        yield family


@dataclass(frozen=True, slots=True)
class WorkerState:
    """What the gauges show, read at scrape time."""

    running: int  # jobs whose code runs now
    slots: int  # MAX_CONCURRENT_JOBS
    free: int  # slots a new job could take now
    gpus: list[GpuInfo] = field(default_factory=list)  # as of the last heartbeat


class _Gauges(Collector):
    def __init__(self, worker_type: str, state: Callable[[], WorkerState]) -> None:
        self.worker_type, self.state = worker_type, state

    def collect(self) -> Iterator[Metric]:
        s, wt = self.state(), [self.worker_type]
        for name, doc, number in (
                ("aiq_worker_jobs_running", "jobs whose code runs now", s.running),
                ("aiq_worker_slots", "MAX_CONCURRENT_JOBS", s.slots),
                ("aiq_worker_slots_free", "slots a new job could take now", s.free)):
            family = GaugeMetricFamily(name, doc, labels=["worker_type"])
            family.add_metric(wt, number)
            yield family
        per_gpu = ["worker_type", "gpu", "name"]
        total = GaugeMetricFamily("aiq_gpu_memory_total_bytes", "memory of the device",
                                  labels=per_gpu)
        used = GaugeMetricFamily("aiq_gpu_memory_used_bytes", "memory in use on the device, by "
                                 "any process (total - NVML free)", labels=per_gpu)
        reserved = GaugeMetricFamily("aiq_gpu_memory_reserved_bytes", "memory GPU admission "
                                     "promised to this worker's running jobs that NVML does not "
                                     "show in use yet", labels=per_gpu)
        for gpu in s.gpus:
            labels = [self.worker_type, str(gpu.index), gpu.name]
            total.add_metric(labels, gpu.total_mb * MIB)
            used.add_metric(labels, max(gpu.total_mb - gpu.free_mb, 0) * MIB)
            reserved.add_metric(labels, gpu.reserved_mb * MIB)
        yield from (total, used, reserved)


class WorkerMetrics:
    """The metrics of one worker, in a registry of its own (several workers may share a
    process, as in the tests)."""

    def __init__(self, worker_type: str, model_types: frozenset[str]) -> None:
        self.worker_type = worker_type
        self.model_types = model_types
        self.registry = CollectorRegistry()
        r = self.registry
        self.duration = JobHistogram(
            "aiq_job_duration_seconds", "time a job's code ran on this worker, by how the run "
            "ended", ["worker_type", "kind", "model_type", "outcome"], DURATION_BUCKETS)
        self.queue_wait = JobHistogram(
            "aiq_job_queue_wait_seconds", "time from a job's entry entering its stream (submit, "
            "retry promotion, hand-back) to its first start", ["worker_type", "kind",
            "model_type"], WAIT_BUCKETS)
        r.register(self.duration)
        r.register(self.queue_wait)
        self.failures = Counter(
            "aiq_job_failures", "runs that ended in an error, by error code: failed for good or "
            "retried", ["worker_type", "kind", "code", "outcome"], registry=r)
        self.renewals = Counter("aiq_lease_renewals", "leases renewed (entries claimed again "
                                "with their idle time reset)", ["worker_type"], registry=r)
        self.leases_lost = Counter("aiq_leases_lost", "entries found reclaimed by another "
                                   "worker at renewal", ["worker_type"], registry=r)
        self.reclaimed = Counter("aiq_reclaimed_entries", "expired entries of dead workers "
                                 "this worker took back", ["worker_type"], registry=r)
        ProcessCollector(registry=r)
        for counter in (self.renewals, self.leases_lost, self.reclaimed):
            counter.labels(worker_type)  # exported as 0 from the start

    def watch(self, state: Callable[[], WorkerState]) -> None:
        """Export the gauges, read from ``state()`` at each scrape."""
        self.registry.register(_Gauges(self.worker_type, state))

    def _model_type(self, d: Delivery) -> str:
        model_type = d.message.model_type if d.message is not None else OTHER
        return model_type if model_type in self.model_types else OTHER

    def started(self, d: Delivery, now_ms: int) -> None:
        """A job's code is about to run: its wait in the queue, on its first delivery only (a
        reclaimed entry's age includes its dead worker's run). The entry id's time is Redis's
        clock, ``now_ms`` the worker's: skew shows here, cut at 0."""
        if d.deliveries != 1:
            return
        queued_ms = int(d.entry_id.partition("-")[0])
        self.queue_wait.observe((self.worker_type, _KINDS[d.kind], self._model_type(d)),
                                max(now_ms - queued_ms, 0) / 1000)

    def ended(self, d: Delivery, outcome: Outcome, run_s: float, error_code: str = "") -> None:
        """A run ended: how (``outcome_of`` its ending), after ``run_s`` seconds of its code,
        with which error code (failed and retried runs)."""
        kind = _KINDS[d.kind]
        self.duration.observe((self.worker_type, kind, self._model_type(d), outcome), run_s)
        if error_code and outcome in _ERRORS:
            self.failures.labels(self.worker_type, kind, error_code, outcome).inc()

    def renewed(self, renewed: int, lost: int) -> None:
        self.renewals.labels(self.worker_type).inc(renewed)
        self.leases_lost.labels(self.worker_type).inc(lost)

    def took_back(self, entries: int) -> None:
        self.reclaimed.labels(self.worker_type).inc(entries)


class MetricsServer:
    """prometheus-client's HTTP server (a thread) for one registry, stopped by ``close``."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, host, registry)
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=5)


def serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> MetricsServer:
    """Raises OSError when the port cannot be bound."""
    return MetricsServer(metrics.registry, host, port)

