"""Bounded cost: a job's timeout_s is enforced, every built-in model type stops soon after a
cancel or timeout (native sklearn fits run in a killable child), and a SIGKILLed worker leaves
no child behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis

from consumers import killable
from consumers.errors import CancelRequested
from schemas.requests import TrainingRequest
from schemas.status import JobStatus
from streams.producer import Producer
from tests.support import eventually, running_worker, settings_for, spawn_worker


def job(model_type: str, data_path: str | None = None, timeout_s: float | None = None,
        **hp: Any) -> TrainingRequest:
    return TrainingRequest(model_type=model_type, data_path=data_path, timeout_s=timeout_s,
                           hyperparameters=hp)  # type: ignore[arg-type]


def big_csv(path: Path, rows: int = 40_000, features: int = 40) -> str:
    """A dataset an RBF SVC needs minutes for (noisy labels: many support vectors)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features))
    y = (x[:, 0] + rng.normal(scale=2.0, size=rows) > 0).astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join(f"f{i}" for i in range(features)) + ",label"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="",
               fmt=["%.5f"] * features + ["%d"])
    return path.name


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---- timeout_s ---------------------------------------------------------------------------

async def test_timeout_fails_a_job_that_runs_too_long(redis: Redis, redis_url: str,
                                                       tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path)):
        # one step of 60 s: the sleep is sliced, so the timeout takes effect within a slice
        slow = await producer.submit_training(job("sleep", timeout_s=1.0, seconds=60, steps=1))
        quick = await producer.submit_training(job("sleep", timeout_s=30, seconds=0.2))
        started = time.monotonic()
        rec = await producer.wait(slow.job_id, timeout=30)
        took = time.monotonic() - started
        ok = await producer.wait(quick.job_id, timeout=30)
    assert rec.status is JobStatus.FAILED and rec.error is not None
    assert rec.error.code == "timeout" and "timeout of 1 s" in rec.error.message
    assert not rec.error.retryable and rec.attempt == 1
    assert took < 15, f"the timed-out job took {took:.1f} s to end"
    assert ok.status is JobStatus.SUCCEEDED
    assert rec.timeout_s == 1.0  # the record shows what was asked


async def test_worker_default_and_maximum_timeout(redis: Redis, redis_url: str,
                                                  tmp_path: Path) -> None:
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, job_timeout_s=0.5, max_job_timeout_s=1.0)
    assert settings.timeout_of(None) == 0.5 and settings.timeout_of(3600) == 1.0
    async with running_worker(settings):
        default = await producer.submit_training(job("sleep", seconds=60, steps=1))
        capped = await producer.submit_training(job("sleep", timeout_s=3600, seconds=60,
                                                    steps=1))
        recs = [await producer.wait(s.job_id, timeout=30) for s in (default, capped)]
    assert [r.error.code if r.error else None for r in recs] == ["timeout", "timeout"]
    assert recs[0].error is not None and "timeout of 0.5 s" in recs[0].error.message
    assert recs[1].error is not None and "timeout of 1 s" in recs[1].error.message


async def test_cancel_reaches_a_job_in_one_long_step(redis: Redis, redis_url: str,
                                                     tmp_path: Path) -> None:
    """No progress report (one step of a minute) and no lease renewal soon (a 30 s lease): the
    cancel arrives through the cancel watch, within CANCEL_CHECK_S plus a sleep slice."""
    producer = Producer(redis)
    settings = settings_for(redis_url, tmp_path, lease_timeout_s=30, reclaim_interval_s=10,
                            cancel_check_s=0.5)
    async with running_worker(settings):
        sub = await producer.submit_training(job("sleep", seconds=60, steps=1))

        async def running() -> bool:
            return (await producer.get(sub.job_id)).status is JobStatus.RUNNING

        await eventually(running, timeout=30, what="the job to start")
        asked = time.monotonic()
        await producer.cancel(sub.job_id)
        rec = await producer.wait(sub.job_id, timeout=30)
        took = time.monotonic() - asked
    assert rec.status is JobStatus.CANCELLED
    assert took < 5, f"the cancel took {took:.1f} s to reach the job"


# ---- native fits in a killable child -------------------------------------------------------

def _spin(pid_file: str, progress: Any) -> None:  # runs in the child
    Path(pid_file).write_text(str(os.getpid()))
    progress("spinning", percent=1)
    time.sleep(3600)  # a native call that never comes back to Python on its own


def _boom(progress: Any) -> None:  # runs in the child
    raise ValueError("bad input in the child")


def _answer(x: int, progress: Any) -> int:  # runs in the child
    progress("adding", step=1, steps=1)
    return x + 1


class _Run:
    """A progress callback with a stop check (what the worker's JobRun gives a job)."""

    def __init__(self, stop_after_s: float | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.stop_after_s = stop_after_s
        self.deadline: float | None = None  # counted from the child's first report
        self.stopped_at: float | None = None

    def __call__(self, stage: str, **fields: Any) -> None:
        self.calls.append((stage, fields))
        if self.stop_after_s is not None and self.deadline is None:
            self.deadline = time.monotonic() + self.stop_after_s

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stopped_at = self.stopped_at or time.monotonic()
            raise CancelRequested


def test_killable_returns_the_value_and_relays_progress() -> None:
    run = _Run()
    assert killable.run(_answer, (41,), run) == 42
    assert run.calls == [("adding", {"step": 1, "steps": 1})]


def test_killable_raises_the_child_exception() -> None:
    try:
        killable.run(_boom, (), _Run())
    except ValueError as exc:
        assert "bad input in the child" in str(exc)
    else:
        raise AssertionError("no exception")


def test_killable_stops_a_native_call_at_once(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    run = _Run(stop_after_s=1.0)
    try:
        killable.run(_spin, (str(pid_file),), run)
    except CancelRequested:
        pass
    else:
        raise AssertionError("not stopped")
    assert run.stopped_at is not None and run.deadline is not None
    noticed = run.stopped_at - run.deadline  # at most one poll (POLL_S) on a quiet machine
    gone = time.monotonic() - run.stopped_at  # the kill and join
    assert noticed < 10 * killable.POLL_S and gone < 5, (noticed, gone)
    assert run.calls and run.calls[0][0] == "spinning"
    assert not _alive(int(pid_file.read_text()))


async def test_svm_fit_cancels_and_times_out_within_a_poll(redis: Redis, redis_url: str,
                                                          tmp_path: Path) -> None:
    data = big_csv(tmp_path / "data" / "big.csv")
    producer = Producer(redis)
    async with running_worker(settings_for(redis_url, tmp_path, "sklearn")):
        timed = await producer.submit_training(job("svm", data, timeout_s=4.0))
        cancelled = await producer.submit_training(job("svm", data))

        async def training() -> bool:
            rec = await producer.get(cancelled.job_id)
            return bool(rec.progress and rec.progress.get("stage") == "training")

        await eventually(training, timeout=60, what="the svm fit to start")
        asked = time.monotonic()
        await producer.cancel(cancelled.job_id)
        rec = await producer.wait(cancelled.job_id, timeout=60)
        cancel_s = time.monotonic() - asked
        timed_rec = await producer.wait(timed.job_id, timeout=60)
    assert rec.status is JobStatus.CANCELLED
    assert cancel_s < 10, f"cancel of a running svm fit took {cancel_s:.1f} s"
    assert timed_rec.error is not None and timed_rec.error.code == "timeout"


async def test_sigkilled_worker_leaves_no_child(redis: Redis, redis_url: str,
                                                tmp_path: Path) -> None:
    data = big_csv(tmp_path / "data" / "big.csv")
    producer = Producer(redis)
    proc = spawn_worker(settings_for(redis_url, tmp_path, "sklearn"), tmp_path / "w.log")
    try:
        sub = await producer.submit_training(job("svm", data))

        async def fitting() -> set[int]:
            rec = await producer.get(sub.job_id)
            kids = _children(proc.pid)
            # the fork server and the fit's child under it
            return kids if rec.progress and rec.progress.get("stage") == "training" \
                and len(kids) >= 2 else set()

        kids = await eventually(fitting, timeout=120, interval=0.2, what="the fit's child")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        async def all_gone() -> bool:
            return not any(_alive(k) for k in kids)

        await eventually(all_gone, timeout=30, interval=0.1, what="the children to die")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
