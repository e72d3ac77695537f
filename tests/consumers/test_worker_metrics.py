"""A worker's own metrics: histograms and counters move as its jobs do, gauges show its slots
and GPUs, and METRICS_PORT serves them over HTTP (a busy port stops the worker at start)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from consumers.__main__ import start_metrics
from consumers.gpu import ScriptedDevice, ScriptedDevices
from consumers.metrics import MIB, JobHistogram, WorkerMetrics, serve_metrics
from consumers.startup import StartupError
from schemas.requests import TrainingRequest
from schemas.status import JobKind
from streams.keys import GROUP, QueueKeys
from streams.producer import Producer
from tests.support import eventually, running_worker, settings_for

KEYS = QueueKeys("diagnostic")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def job(model_type: str = "noop", **hp: object) -> TrainingRequest:
    return TrainingRequest(model_type=model_type, hyperparameters=hp)  # type: ignore[arg-type]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def read(metrics: WorkerMetrics) -> Samples:
    return parse(generate_latest(metrics.registry).decode())


def value(got: Samples, metric: str, **labels: str) -> float:
    return got.get((metric, frozenset({"worker_type": "diagnostic", **labels}.items())), 0.0)


def count(got: Samples, metric: str, **labels: str) -> float:
    """Sum of ``metric`` over the series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in got.items() if n == metric and wanted <= ls)


async def test_histograms_and_counters_follow_the_jobs(redis: Redis, redis_url: str,
                                                       tmp_path: Path) -> None:
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, max_retries=1)
    async with running_worker(settings) as worker:
        before = read(worker.metrics)
        assert value(before, "aiq_worker_slots") == 2
        assert value(before, "aiq_worker_slots_free") == 2
        assert value(before, "aiq_worker_jobs_running") == 0
        assert value(before, "aiq_lease_renewals_total") == 0  # exported before any renewal
        subs = [await producer.submit_training(job()) for _ in range(3)]
        subs.append(await producer.submit_training(job("fail", error="fatal")))
        subs.append(await producer.submit_training(job("fail", error="retryable")))
        long = await producer.submit_training(job("sleep", seconds=1.5, steps=3))
        await eventually(lambda: _running(worker), 10, what="the sleep job running")
        during = read(worker.metrics)
        for sub in [*subs, long]:
            await producer.wait(sub.job_id, timeout=20)
        await eventually(lambda: _idle(worker), 10, what="the final writes")
        got = read(worker.metrics)

    assert value(during, "aiq_worker_jobs_running") >= 1
    assert value(during, "aiq_worker_slots_free") <= 1
    labels = {"kind": "training"}
    duration = "aiq_job_duration_seconds_count"
    assert count(got, duration, model_type="noop", outcome="succeeded", **labels) == 3
    assert count(got, duration, model_type="sleep", outcome="succeeded", **labels) == 1
    assert count(got, duration, model_type="fail", outcome="failed", **labels) == 2
    assert count(got, duration, model_type="fail", outcome="retried", **labels) == 1
    assert count(got, duration) == 7  # 6 jobs, one of them run twice
    assert count(got, "aiq_job_duration_seconds_sum", model_type="sleep") >= 1.4
    assert count(got, "aiq_job_queue_wait_seconds_count", **labels) == 7
    assert value(got, "aiq_job_failures_total", code="diagnostic", outcome="failed",
                 **labels) == 1
    assert value(got, "aiq_job_failures_total", code="retryable_error", outcome="retried",
                 **labels) == 1
    assert value(got, "aiq_job_failures_total", code="retryable_error", outcome="failed",
                 **labels) == 1
    assert value(got, "aiq_lease_renewals_total") >= 2  # the 1.5 s job, every 1/3 s lease
    assert value(got, "aiq_leases_lost_total") == 0
    assert not any("job_" in "".join(dict(ls).values()) for _, ls in got)
    assert count(got, "process_cpu_seconds_total") > 0


async def _running(worker: object) -> bool:
    return getattr(worker, "executing", 0) > 0


async def _idle(worker: object) -> bool:
    return not getattr(worker, "runs", True)


async def test_reclaimed_entries_are_counted(redis: Redis, redis_url: str,
                                             tmp_path: Path) -> None:
    producer = Producer(redis)
    sub = await producer.submit_training(job())
    await redis.xreadgroup(GROUP, "ghost", {KEYS.stream(JobKind.TRAINING): ">"}, count=1)
    async with running_worker(settings_for(redis_url, tmp_path)) as worker:  # lease 1 s
        await producer.wait(sub.job_id, timeout=20)
        got = read(worker.metrics)
    assert value(got, "aiq_reclaimed_entries_total") == 1
    assert count(got, "aiq_job_queue_wait_seconds_count") == 0  # a second delivery: no wait


async def test_gpu_gauges_from_the_heartbeat_inventory(redis_url: str, tmp_path: Path) -> None:
    devices = ScriptedDevices([ScriptedDevice(total_mb=16000, free_mb=12000, name="sim")])
    settings = settings_for(redis_url, tmp_path)
    gpu = {"gpu": "0", "name": "sim-0"}
    async with running_worker(settings, devices=devices) as worker:
        async def seen() -> Samples | None:  # from the worker's first heartbeat on
            got = read(worker.metrics)
            return got if value(got, "aiq_gpu_memory_total_bytes", **gpu) else None

        got = await eventually(seen, 10, what="the GPU gauges")
    assert value(got, "aiq_gpu_memory_total_bytes", **gpu) == 16000 * MIB
    assert value(got, "aiq_gpu_memory_used_bytes", **gpu) == 4000 * MIB
    assert value(got, "aiq_gpu_memory_reserved_bytes", **gpu) == 0


async def test_cpu_workers_export_no_gpu_series(redis: Redis, redis_url: str,
                                                tmp_path: Path) -> None:
    async with running_worker(settings_for(redis_url, tmp_path)) as worker:
        await eventually(lambda: redis.exists(KEYS.worker(worker.name)), 10,
                         what="the first heartbeat")
        got = read(worker.metrics)
    assert not any(name.startswith("aiq_gpu_") for name, _ in got)


def test_metrics_port_serves_over_http_and_a_busy_port_stops_the_worker(
        redis_url: str, tmp_path: Path) -> None:
    metrics = WorkerMetrics("diagnostic", frozenset({"noop"}))
    server = serve_metrics(metrics, "127.0.0.1", 0)
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert response.status_code == 200
        assert value(parse(response.text), "aiq_lease_renewals_total") == 0
        settings = settings_for(redis_url, tmp_path, metrics_port=server.port,
                                metrics_host="127.0.0.1")
        with pytest.raises(StartupError, match=f"METRICS_PORT: cannot serve metrics on "
                                               f"127.0.0.1:{server.port}"):
            start_metrics(metrics, settings)
    finally:
        server.close()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=1)


def test_metrics_are_off_by_default(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path)
    assert settings.metrics_port == 0
    assert start_metrics(WorkerMetrics("diagnostic", frozenset()), settings) is None



def test_job_histogram_buckets_are_cumulative_and_inclusive() -> None:
    """A value on a bound counts in that bucket (Prometheus' ``le``); past the last, in +Inf
    only; _count is the +Inf bucket, _sum the total."""
    h = JobHistogram("h_seconds", "doc", ["worker_type"], (1.0, 5.0))
    for v in (0.5, 1.0, 3.0, 5.0, 9.0):
        h.observe(("diagnostic",), v)
    registry = CollectorRegistry()
    registry.register(h)
    got = parse(generate_latest(registry).decode())
    assert value(got, "h_seconds_bucket", le="1.0") == 2
    assert value(got, "h_seconds_bucket", le="5.0") == 4
    assert value(got, "h_seconds_bucket", le="+Inf") == 5
    assert value(got, "h_seconds_count") == 5
    assert value(got, "h_seconds_sum") == 18.5
