"""GPU admission and memory management with a scripted device (no real GPU): jobs wait while
their estimate does not fit (status queued, a ``waiting`` event saying why) and run when memory
frees; a job larger than any device fails at once; CUDA OOM halves the batch size; observed
peaks refine the next estimate; a held job of a SIGKILLed worker is reclaimed by another."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from consumers.gpu import (
    GpuUnavailable,
    ScriptedDevice,
    ScriptedDevices,
    ScriptFileDevices,
    open_devices,
    visible_gpu_count,
    write_script,
)
from consumers.settings import WorkerSettings
from schemas.events import EventType, WaitingEvent, parse_event
from schemas.records import status_view
from schemas.requests import TrainingRequest
from schemas.status import JobKind, JobStatus
from streams.events import replay
from streams.keys import GROUP, QueueKeys
from streams.producer import Producer
from tests.support import eventually, running_worker, settings_for, spawn_worker

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.TRAINING)


def gpu_job(gpu_mem_mb: int | None = None, **hp: Any) -> TrainingRequest:
    return TrainingRequest(model_type="gpu_sim", hyperparameters=hp,  # type: ignore[arg-type]
                           gpu_mem_mb=gpu_mem_mb)


def gpu_settings(redis_url: str, tmp: Path, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {"gpu_headroom_mb": 0, "admission_recheck_s": 0.05,
                              "waiting_event_min_change_mb": 50, **overrides}
    return settings_for(redis_url, tmp, **values)


def one_gpu(free_mb: int, total_mb: int = 1000) -> ScriptedDevices:
    return ScriptedDevices([ScriptedDevice(total_mb=total_mb, free_mb=free_mb)])


async def events(redis: Redis, job_id: str) -> list[Any]:
    """The job's events as a replay gives them (queued is rebuilt from the record)."""
    return [parse_event(i, f) for i, f in (await replay(redis, KEYS, job_id)).entries]


async def waiting_events(redis: Redis, job_id: str) -> list[WaitingEvent]:
    return [e for e in await events(redis, job_id) if isinstance(e, WaitingEvent)]


async def test_job_that_does_not_fit_waits_then_runs_when_memory_frees(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    devices = one_gpu(free_mb=200)
    async with running_worker(gpu_settings(redis_url, tmp_path), devices=devices) as worker:
        sub = await producer.submit_training(gpu_job(gpu_mem_mb=500))
        first = (await eventually(lambda: waiting_events(redis, sub.job_id),
                                  what="a waiting event"))[0]
        assert first.status is JobStatus.QUEUED and first.reason == "gpu_memory"
        assert first.needed_mb == 500 and first.estimate_source == "request"
        assert first.worker == worker.name
        assert [(d.index, d.total_mb, d.free_mb, d.usable_mb) for d in first.devices] == [
            (0, 1000, 200, 200)]
        assert "needs 500 MiB" in first.message
        rec = await producer.get(sub.job_id)
        assert rec.status is JobStatus.QUEUED and rec.waiting is not None
        assert rec.waiting["needed_mb"] == 500
        assert status_view(rec).waiting == rec.waiting  # GET /jobs/{id}/status shows why
        # The worker holds the entry (pending to it), checks it again and again, but writes
        # the reason once while it does not change.
        pending = await redis.xpending_range(STREAM, GROUP, "-", "+", 10)
        assert [p["consumer"] for p in pending] == [worker.name]
        assert worker.admission is not None
        checks = worker.admission.checks
        await eventually(lambda: _at_least(worker.admission.checks, checks + 5),
                         what="five more admission checks")
        devices.set_free(0, 220)  # less than WAITING_EVENT_MIN_CHANGE_MB: same reason
        checks = worker.admission.checks
        await eventually(lambda: _at_least(worker.admission.checks, checks + 3),
                         what="three more admission checks")
        assert len(await waiting_events(redis, sub.job_id)) == 1
        devices.set_free(0, 400)  # still short, but a different reason: a second event
        second = (await eventually(lambda: _nth_waiting(redis, sub.job_id, 2),
                                   what="a second waiting event"))[1]
        assert second.devices[0].free_mb == 400
        assert not [e for e in await events(redis, sub.job_id) if e.type is EventType.STARTED]
        devices.set_free(0, 800)
        rec = await producer.wait(sub.job_id, timeout=10)
    assert rec.status is JobStatus.SUCCEEDED and rec.waiting is None
    assert rec.result is not None and rec.result["device"] == "cuda:0"
    assert rec.result["gpu"] == {"device": "cuda:0", "estimate_mb": 500,
                                 "estimate_source": "request"}
    types = [e.type.value for e in await events(redis, sub.job_id)]
    assert types == ["queued", "waiting", "waiting", "started", "succeeded"]


async def _at_least(value: int, target: int) -> bool:
    return value >= target


async def _nth_waiting(redis: Redis, job_id: str, n: int) -> list[WaitingEvent] | None:
    found = await waiting_events(redis, job_id)
    return found if len(found) >= n else None


async def test_two_jobs_that_do_not_both_fit_run_one_after_another(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    settings = gpu_settings(redis_url, tmp_path, max_concurrent_jobs=2)
    async with running_worker(settings, devices=one_gpu(free_mb=1000)):
        first = await producer.submit_training(gpu_job(600, seconds=0.6, steps=6))
        second = await producer.submit_training(gpu_job(600, seconds=0.1, steps=2))
        held = (await eventually(lambda: waiting_events(redis, second.job_id),
                                 what="the second job waiting"))[0]
        assert held.needed_mb == 600 and held.devices[0].reserved_mb == 600
        assert held.devices[0].usable_mb == 400
        # The hold is decided (and its event written) in the same pass that starts the first
        # job, so the first may still read "queued" for a moment: poll, don't assert at once.

        async def first_started() -> bool:
            return (await producer.get(first.job_id)).status in (JobStatus.RUNNING,
                                                                 JobStatus.SUCCEEDED)

        await eventually(first_started, what="the first job started")
        a = await producer.wait(first.job_id, timeout=10)
        b = await producer.wait(second.job_id, timeout=10)
    assert a.status is JobStatus.SUCCEEDED and b.status is JobStatus.SUCCEEDED
    assert a.result is not None and b.result is not None
    assert b.result["ran_from"] >= a.result["ran_until"]  # one after the other
    assert not await waiting_events(redis, first.job_id)


async def test_jobs_go_to_the_device_with_room(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    devices = ScriptedDevices([ScriptedDevice(total_mb=1000, free_mb=1000),
                               ScriptedDevice(total_mb=1000, free_mb=900)])
    settings = gpu_settings(redis_url, tmp_path, max_concurrent_jobs=2)
    async with running_worker(settings, devices=devices):
        subs = [await producer.submit_training(gpu_job(600, seconds=0.5, steps=5))
                for _ in range(2)]

        async def both_running() -> bool:
            recs = [await producer.get(s.job_id) for s in subs]
            return all(r.status is JobStatus.RUNNING for r in recs)

        await eventually(both_running, what="both jobs running side by side")
        recs = [await producer.wait(s.job_id, timeout=10) for s in subs]
    used = sorted(r.result["device"] for r in recs if r.result is not None)
    assert used == ["cuda:0", "cuda:1"]
    assert not any([await waiting_events(redis, s.job_id) for s in subs])


async def test_job_larger_than_any_device_fails_at_once(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(gpu_settings(redis_url, tmp_path, gpu_headroom_mb=100),
                              devices=one_gpu(free_mb=1000)):
        sub = await producer.submit_training(gpu_job(gpu_mem_mb=950))
        rec = await producer.wait(sub.job_id, timeout=10)
        after = await producer.submit_training(gpu_job(gpu_mem_mb=100))
        ok = await producer.wait(after.job_id, timeout=10)
    assert rec.status is JobStatus.FAILED and rec.attempt == 1
    assert rec.error is not None and rec.error.code == "gpu_memory_exceeded"
    assert not rec.error.retryable
    assert "950 MiB" in rec.error.message and "1000 MiB" in rec.error.message
    assert "900 MiB usable" in rec.error.message
    assert not await waiting_events(redis, sub.job_id)
    assert ok.status is JobStatus.SUCCEEDED  # the worker went on


async def test_table_estimate_above_every_device_is_capped_not_failed(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    devices = one_gpu(free_mb=500)
    async with running_worker(gpu_settings(redis_url, tmp_path), devices=devices):
        # gpu_sim's table: 100 + 10 * batch_size = 5,220 MiB > the 1,000 MiB device
        sub = await producer.submit_training(gpu_job(batch_size=512))
        held = (await eventually(lambda: waiting_events(redis, sub.job_id),
                                 what="waiting for the whole device"))[0]
        assert held.needed_mb == 1000 and held.estimate_source == "table"
        assert "capped to the largest GPU" in held.message
        devices.set_free(0, 1000)
        rec = await producer.wait(sub.job_id, timeout=10)
    assert rec.status is JobStatus.SUCCEEDED


async def test_cuda_oom_retries_with_halved_batch_size(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(gpu_settings(redis_url, tmp_path, max_retries=0),
                              devices=one_gpu(free_mb=1000)):
        sub = await producer.submit_training(gpu_job(batch_size=64, oom_above=16))
        rec = await producer.wait(sub.job_id, timeout=15)
    assert rec.status is JobStatus.SUCCEEDED and rec.attempt == 3
    assert rec.result is not None
    assert rec.result["batch_size"] == 16
    assert rec.result["oom_retries"] == [{"batch_size": 64, "attempt": 1},
                                         {"batch_size": 32, "attempt": 2}]
    assert rec.hyperparameters["batch_size"] == 64  # the request as submitted
    assert rec.overrides is not None and rec.overrides["hyperparameters"] == {"batch_size": 16}
    retrying = [e for e in await events(redis, sub.job_id) if e.type is EventType.RETRYING]
    assert [e.overrides["hyperparameters"]["batch_size"] for e in retrying] == [32, 16]
    assert all(e.error["code"] == "cuda_oom" for e in retrying)


async def test_cuda_oom_halving_is_bounded(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(gpu_settings(redis_url, tmp_path, oom_max_halvings=3)):
        sub = await producer.submit_training(gpu_job(batch_size=64, oom_above=1))
        at_one = await producer.submit_training(gpu_job(batch_size=1, oom_above=0))
        rec = await producer.wait(sub.job_id, timeout=15)
        rec_one = await producer.wait(at_one.job_id, timeout=10)
    assert rec.status is JobStatus.FAILED and rec.attempt == 4
    assert rec.error is not None and rec.error.code == "cuda_oom" and not rec.error.retryable
    assert "gave up at 3 halvings" in rec.error.message
    assert "64 → 32 → 16 → 8" in rec.error.message
    assert rec_one.status is JobStatus.FAILED and rec_one.attempt == 1
    assert rec_one.error is not None and "gave up at batch_size 1" in rec_one.error.message


async def test_observed_peaks_are_stored_and_used_for_the_next_estimate(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    devices = one_gpu(free_mb=1000)
    job = gpu_job(batch_size=8, base_mb=100, mb_per_sample=50)  # peak 500 MiB
    async with running_worker(gpu_settings(redis_url, tmp_path, gpu_estimate_margin=0.1),
                              devices=devices):
        first = await producer.wait((await producer.submit_training(job)).job_id, timeout=10)
        assert first.result is not None
        assert first.result["gpu"]["estimate_source"] == "table"
        assert first.result["gpu"]["estimate_mb"] == 180  # gpu_sim's table: 100 + 10 * 8

        async def stored() -> str | None:
            value: str | None = await redis.hget(KEYS.gpu_peaks, "gpu_sim:training:8")
            return value

        assert await eventually(stored, what="the peak stored") == "500"
        devices.set_free(0, 300)  # enough for the table's 180, not for the peak's 550
        sub = await producer.submit_training(job)
        held = (await eventually(lambda: waiting_events(redis, sub.job_id),
                                 what="waiting on the peak estimate"))[0]
        assert held.needed_mb == 550 and held.estimate_source == "peak"
        devices.set_free(0, 1000)
        second = await producer.wait(sub.job_id, timeout=10)
    assert second.result is not None
    assert second.result["gpu"] == {"device": "cuda:0", "estimate_mb": 550,
                                    "estimate_source": "peak"}
    # the same peak again leaves it as it was
    assert await redis.hget(KEYS.gpu_peaks, "gpu_sim:training:8") == "500"


async def test_cancelled_waiting_job_is_let_go(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(gpu_settings(redis_url, tmp_path),
                              devices=one_gpu(free_mb=100)) as worker:
        sub = await producer.submit_training(gpu_job(gpu_mem_mb=500))
        await eventually(lambda: waiting_events(redis, sub.job_id), what="waiting")
        assert await producer.cancel(sub.job_id) is JobStatus.CANCELLED

        async def let_go() -> bool:
            return worker.admission is not None and not worker.admission.holding

        await eventually(let_go, what="the worker lets the cancelled job go")
        assert await redis.xlen(STREAM) == 0  # acked and deleted
        small = await producer.submit_training(gpu_job(gpu_mem_mb=50))  # reads again
        assert (await producer.wait(small.job_id, timeout=10)).status is JobStatus.SUCCEEDED
    assert (await producer.get(sub.job_id)).status is JobStatus.CANCELLED


async def test_held_job_is_handed_back_on_graceful_stop(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(gpu_settings(redis_url, tmp_path),
                              devices=one_gpu(free_mb=100)):
        sub = await producer.submit_training(gpu_job(gpu_mem_mb=500))
        await eventually(lambda: waiting_events(redis, sub.job_id), what="waiting")
    rec = await producer.get(sub.job_id)  # the worker stopped (SIGTERM path): handed back
    assert rec.status is JobStatus.QUEUED
    assert [e.type.value for e in await events(redis, sub.job_id)][-1] == "requeued"
    assert await redis.xpending_range(STREAM, GROUP, "-", "+", 10) == []
    assert await redis.xlen(STREAM) == 1  # a fresh entry, for the next worker


@pytest.mark.slow
async def test_waiting_job_of_a_sigkilled_worker_is_reclaimed(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    full, roomy = tmp_path / "gpu-a.json", tmp_path / "gpu-b.json"
    write_script(full, [ScriptedDevice(total_mb=1000, free_mb=100)])
    write_script(roomy, [ScriptedDevice(total_mb=1000, free_mb=1000)])
    lease_s = 1.0
    a = spawn_worker(gpu_settings(redis_url, tmp_path, gpu_script=full, lease_timeout_s=lease_s,
                                  reclaim_interval_s=0.1), tmp_path / "a.log")
    procs = [a]
    try:
        await eventually(lambda: redis.smembers(KEYS.workers), timeout=20, what="worker a")
        sub = await producer.submit_training(gpu_job(gpu_mem_mb=500))
        held = (await eventually(lambda: waiting_events(redis, sub.job_id),
                                 what="worker a holding the job"))[0]
        b = spawn_worker(gpu_settings(redis_url, tmp_path, gpu_script=roomy,
                                      lease_timeout_s=lease_s, reclaim_interval_s=0.1),
                         tmp_path / "b.log")
        procs.append(b)

        async def two() -> bool:
            return len(await redis.smembers(KEYS.workers)) == 2

        await eventually(two, timeout=20, what="worker b registered")
        # While a lives, its renewed lease keeps the job from b (which has room and reclaims
        # every 0.1 s): watch for three lease periods.
        watch_until = time.monotonic() + 3 * lease_s
        while time.monotonic() < watch_until:
            pending = await redis.xpending_range(STREAM, GROUP, "-", "+", 10)
            assert [p["consumer"] for p in pending] == [held.worker]
            assert (await producer.get(sub.job_id)).status is JobStatus.QUEUED
            await asyncio.sleep(0.1)
        os.kill(a.pid, signal.SIGKILL)
        rec = await producer.wait(sub.job_id, timeout=15)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)
    assert rec.status is JobStatus.SUCCEEDED
    assert rec.worker != held.worker and rec.deliveries == 2
    assert rec.result is not None and rec.result["gpu"]["device"] == "cuda:0"


def test_worker_with_unreadable_gpu_script_fails_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "WORKER_TYPE": "diagnostic", "MODEL_FRAMEWORK": "diagnostic",
           "AIQ_GPU_SCRIPT": str(tmp_path / "missing.json")}
    proc = subprocess.run([sys.executable, "-m", "consumers"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "GPU script" in lines[0] and "missing.json" in lines[0], lines


def test_scripted_devices_and_the_nvml_boundary(tmp_path: Path) -> None:
    path = tmp_path / "gpu.json"
    write_script(path, [ScriptedDevice(total_mb=16000, free_mb=4000, name="fake")])
    devices = open_devices(path)
    assert isinstance(devices, ScriptFileDevices)
    first = devices.devices()[0]
    assert (first.index, first.name, first.total_mb, first.free_mb) == (0, "fake", 16000, 4000)
    write_script(path, [ScriptedDevice(total_mb=16000, free_mb=9000)])
    assert devices.devices()[0].free_mb == 9000
    path.write_text("{not json")  # a torn write: the last good reading
    assert devices.devices()[0].free_mb == 9000
    if visible_gpu_count() == 0:  # this machine: no GPU (or no NVML bindings)
        with pytest.raises(GpuUnavailable):
            open_devices(None)


async def test_a_jobs_own_max_retries_bounds_its_cuda_oom_halvings(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """Each halving is an attempt: a job with ``max_retries: 1`` is halved once, then fails
    with the OOM error (the worker's OOM_MAX_HALVINGS would allow 3)."""
    producer = Producer(redis)
    req = gpu_job(batch_size=64, oom_above=1).model_copy(update={"max_retries": 1})
    async with running_worker(gpu_settings(redis_url, tmp_path, oom_max_halvings=3)):
        sub = await producer.submit_training(req)
        rec = await producer.wait(sub.job_id, timeout=15)
    assert rec.status is JobStatus.FAILED and rec.attempt == 2
    assert rec.error is not None and rec.error.code == "cuda_oom" and not rec.error.retryable
    assert "64 → 32" in rec.error.message and "16" not in rec.error.message
