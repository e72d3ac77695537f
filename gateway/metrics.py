"""What ``GET /metrics`` exports: the queues and job counters of every worker type, read from
Redis at scrape time (``streams.snapshot.read_numbers``: two pipelined round trips, the same at
any queue size), in Prometheus' text format. docs/MONITORING.md lists every metric.

No job id is ever a label: the labels are the worker type, the kind (``training``,
``inference``, ``command``) and, on ``aiq_jobs_total``, the outcome, so the number of series is
fixed by the catalogue: 42 series per worker type (296 for the 7 of the default catalogue).

Redis down: the scrape still answers 200, with ``aiq_redis_up 0`` and no queue series (absent,
not zero: an outage must not look like an empty queue), so Prometheus' ``up`` keeps meaning
"the gateway answers" and an alert can tell the two apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from streams.errors import UNAVAILABLE
from streams.snapshot import OUTCOMES, SUBMITTED, TypeNumbers, read_numbers

# What Prometheus 2.x and 3.x both read as the classic text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TYPE, KIND = "worker_type", "kind"


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class QueueCollector(Collector):
    """The metric families of one scrape, from the numbers read for it (None: Redis did not
    answer)."""

    def __init__(self, numbers: list[TypeNumbers] | None, read_s: float) -> None:
        self.numbers = numbers
        self.read_s = read_s

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("aiq_redis_up", "1 when the gateway read this scrape from "
                                "Redis, 0 when Redis did not answer (queue series absent)",
                                value=0 if self.numbers is None else 1)
        yield GaugeMetricFamily("aiq_metrics_read_seconds", "time this scrape spent reading "
                                "Redis", value=self.read_s)
        if self.numbers is not None:
            yield from _families(self.numbers)


def _families(numbers: Iterable[TypeNumbers]) -> Iterator[Metric]:
    per_kind = [TYPE, KIND]
    length = _gauge("aiq_queue_length", "jobs in the stream not finished (waiting or "
                    "running: XLEN, acked entries are deleted), both priority lanes", per_kind)
    high = _gauge("aiq_queue_length_high", "of aiq_queue_length, the jobs in the "
                  "high-priority lane", per_kind)
    pending = _gauge("aiq_pending", "entries delivered to a worker and not yet acked "
                     "(XPENDING)", per_kind)
    oldest = _gauge("aiq_oldest_pending_age_seconds", "age of the oldest pending entry, from "
                    "when it entered the stream; 0 when nothing is pending", per_kind)
    owner_idle = _gauge("aiq_pending_owner_idle_seconds", "how long the most silent worker "
                        "holding pending entries has not read nor renewed a lease; past "
                        "LEASE_TIMEOUT_S its entries wait to be reclaimed; 0 when nothing is "
                        "pending", per_kind)
    dead = _gauge("aiq_dead_letters", "entries in the stream's dead-letter stream (capped at "
                  "DEAD_LETTER_MAXLEN)", per_kind)
    delayed = _gauge("aiq_delayed", "jobs waiting out a retry backoff (one set per worker "
                     "type, every kind)", [TYPE])
    workers = _gauge("aiq_workers", "live workers: registered, heartbeat not expired", [TYPE])
    jobs = CounterMetricFamily("aiq_jobs", "jobs that reached an outcome (stats hash)",
                               labels=[TYPE, KIND, "outcome"])
    submitted = CounterMetricFamily("aiq_jobs_submitted", "jobs submitted", labels=per_kind)
    fenced = CounterMetricFamily("aiq_fenced_writes", "writes of a worker that no longer owned "
                                 "the entry (a zombie), rejected", labels=[TYPE])
    for row in numbers:
        wt = row.worker_type
        for s in row.streams:
            labels = [wt, s.kind]
            length.add_metric(labels, s.length)
            high.add_metric(labels, s.high)
            pending.add_metric(labels, s.pending)
            oldest.add_metric(labels, s.oldest_pending_age_s or 0.0)
            owner_idle.add_metric(labels, s.owner_idle_s or 0.0)
            dead.add_metric(labels, s.dead_letters)
            submitted.add_metric(labels, s.counters[SUBMITTED])
            for outcome in OUTCOMES:
                jobs.add_metric([*labels, outcome], s.counters[outcome])
        delayed.add_metric([wt], row.delayed)
        workers.add_metric([wt], row.workers)
        fenced.add_metric([wt], row.fenced)
    yield from (length, high, pending, oldest, owner_idle, dead, delayed, workers, jobs, submitted,
                fenced)


async def scrape(redis: Redis, prefix: str, worker_types: Iterable[str] | None = None
                 ) -> bytes:
    """One scrape's text. Redis unavailable: ``aiq_redis_up 0``; other errors propagate."""
    started = time.perf_counter()
    numbers: list[TypeNumbers] | None
    try:
        numbers = await read_numbers(redis, prefix, worker_types)
    except UNAVAILABLE:
        numbers = None
    return generate_latest(QueueCollector(numbers, time.perf_counter() - started))
