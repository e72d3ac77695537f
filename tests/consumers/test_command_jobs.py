"""Command jobs on a real worker (in this event loop) with real child processes and real Redis:
exit codes and the stderr tail, aiq.report progress, $AIQ_OUTPUT_DIR artifacts, the job's
environment variables, working directories (data root, archives), timeout and cancel that
leave no process behind, and a worker without COMMAND_JOBS that never touches the stream."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumers.gpu import ScriptedDevice, ScriptedDevices
from schemas.events import ProgressEvent, parse_event
from schemas.status import JobKind, JobStatus, Priority
from streams.keys import GROUP, QueueKeys
from streams.producer import Producer
from tests.consumers.command_support import (
    command_settings,
    marker,
    processes_with,
    python,
    submit,
)
from tests.support import eventually, running_worker, settings_for

KEYS = QueueKeys("diagnostic")
STREAM = KEYS.stream(JobKind.COMMAND)


async def log_lines(redis: Redis, job_id: str) -> list[tuple[str, str]]:
    return [(f["stream"], f["line"]) for _, f in await redis.xrange(KEYS.job_logs(job_id))]


async def no_process_with(token: str, timeout: float = 15) -> None:
    async def gone() -> bool:
        return not processes_with(token)

    await eventually(gone, timeout=timeout, what=f"no process with {token} left")


async def test_exit_codes_say_how_a_command_ended(redis: Redis, redis_url: str,
                                                 tmp_path: Path) -> None:
    producer = Producer(redis)
    async with running_worker(command_settings(redis_url, tmp_path, max_concurrent_jobs=4)):
        ok = await submit(producer, ["sh", "-c", "echo hello; echo warn >&2"])
        bad = await submit(producer, ["sh", "-c", "echo one >&2; echo two >&2; exit 3"])
        killed = await submit(producer, ["sh", "-c", "echo dying >&2; kill -SEGV $$"])
        missing = await submit(producer, ["no-such-program-aiq"])
        recs = [await producer.wait(s.job_id, timeout=60) for s in (ok, bad, killed, missing)]
        logs = await log_lines(redis, ok.job_id)
    assert recs[0].status is JobStatus.SUCCEEDED and recs[0].result is not None
    assert recs[0].result["exit_code"] == 0 and recs[0].result["framework"] == "command"
    assert ("stdout", "hello") in logs and ("stderr", "warn") in logs
    assert logs[0][0] == "aiq" and logs[0][1].startswith("running sh -c")
    assert logs[-1] == ("aiq", logs[-1][1]) and logs[-1][1].startswith("exit code 0")
    error = recs[1].error
    assert error is not None and error.code == "command_failed" and not error.retryable
    assert error.model_extra == {"exit_code": 3, "stderr_tail": "one\ntwo"}
    assert "exit code 3" in error.message and error.message.endswith("one\ntwo")
    assert recs[2].error is not None and recs[2].error.code == "command_killed"
    assert recs[2].error.model_extra is not None
    assert recs[2].error.model_extra["signal"] == "SIGSEGV"
    assert recs[3].error is not None and recs[3].error.code == "command_not_found"
    assert "no-such-program-aiq" in recs[3].error.message
    assert await redis.hget(KEYS.stats, "command:succeeded") == "1"
    assert await redis.hget(KEYS.stats, "command:failed") == "3"
    assert await redis.xlen(STREAM) == 0  # finished entries leave the stream


async def test_ex_tempfail_is_retried(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    script = 'echo "attempt $AIQ_ATTEMPT"; [ "$AIQ_ATTEMPT" -ge 2 ] || exit 75'
    async with running_worker(command_settings(redis_url, tmp_path)):
        again = await submit(producer, ["sh", "-c", script], max_retries=2)
        never = await submit(producer, ["sh", "-c", "exit 75"], max_retries=0)
        recs = [await producer.wait(s.job_id, timeout=60) for s in (again, never)]
        logs = await log_lines(redis, again.job_id)
    assert recs[0].status is JobStatus.SUCCEEDED and recs[0].attempt == 2
    assert ("stdout", "attempt 1") in logs and ("stdout", "attempt 2") in logs  # one log
    assert recs[1].error is not None and recs[1].error.code == "command_tempfail"


async def test_report_becomes_progress_and_metrics(redis: Redis, redis_url: str,
                                                   tmp_path: Path) -> None:
    producer = Producer(redis)
    code = ("import aiq\n"
            "for i in range(1, 4):\n"
            "    aiq.report(step=i, steps=3, loss=1 / i, accuracy=i / 4, stage='training')\n"
            "aiq.report(message='done', bad='text')\n")
    async with running_worker(command_settings(redis_url, tmp_path)):
        sub = await submit(producer, python(code))
        rec = await producer.wait(sub.job_id, timeout=60)
        progress = [e for e in (parse_event(i, f) for i, f in
                                await redis.xrange(KEYS.job_events(sub.job_id)))
                    if isinstance(e, ProgressEvent)]
        logs = await log_lines(redis, sub.job_id)
    assert rec.status is JobStatus.SUCCEEDED and rec.result is not None
    assert rec.result["metrics"] == {"loss": pytest.approx(1 / 3), "accuracy": 0.75}
    assert rec.result["step"] == 3 and rec.result["reports"] == 4
    last = [e for e in progress if e.stage == "training"][-1]
    assert (last.step, last.steps, last.percent) == (3, 3, 100.0)
    assert last.metrics == {"accuracy": 0.75} and last.loss == pytest.approx(1 / 3)
    assert any(line.startswith("report field 'bad'") for stream, line in logs
               if stream == "aiq")


async def test_output_dir_files_become_artifacts(redis: Redis, redis_url: str,
                                                 tmp_path: Path) -> None:
    producer = Producer(redis)
    code = ("import os, pathlib\n"
            "out = pathlib.Path(os.environ['AIQ_OUTPUT_DIR'])\n"
            "(out / 'model.bin').write_bytes(b'weights')\n"
            "(out / 'eval').mkdir()\n"
            "(out / 'eval' / 'scores.json').write_text('{}')\n"
            "(out / 'link').symlink_to('/etc/passwd')\n")
    async with running_worker(command_settings(redis_url, tmp_path)):
        sub = await submit(producer, python(code))
        rec = await producer.wait(sub.job_id, timeout=60)
        logs = await log_lines(redis, sub.job_id)
    assert rec.result is not None
    assert rec.result["artifacts"] == ["eval/scores.json", "model.bin"]
    assert rec.result["artifact_dir"] == sub.job_id
    stored = tmp_path / "artifacts" / sub.job_id
    assert (stored / "output" / "model.bin").read_bytes() == b"weights"
    meta = json.loads((stored / "metadata.json").read_text())
    assert meta["kind"] == "command"
    assert meta["files"] == ["output/eval/scores.json", "output/model.bin"]
    assert ("aiq", "output 'link' skipped: not a regular file") in logs


async def test_environment_of_the_program(redis: Redis, redis_url: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIQ_TEST_WORKER_SECRET", "hunter2")  # not passed through
    monkeypatch.setenv("LANG", "C.UTF-8")  # passed through
    monkeypatch.setenv("UV_INDEX_URL", "https://mirror.example/simple")  # UV_*: passed
    monkeypatch.setenv("UV_PROJECT_ENVIRONMENT", "/srv/worker-venv")  # the worker's own: not
    monkeypatch.setenv("UV_LOCKED", "1")  # nor its lock policy
    producer = Producer(redis)
    code = ("import json, os, sys\n"
            "keys = ('SEED', 'LANG', 'AIQ_TEST_WORKER_SECRET', 'AIQ_JOB_ID', 'AIQ_ATTEMPT',"
            " 'AIQ_WORKER', 'AIQ_REPORT_FD', 'PYTHONUNBUFFERED', 'UV_INDEX_URL',"
            " 'UV_PROJECT_ENVIRONMENT', 'UV_LOCKED')\n"
            "print(json.dumps({k: os.environ.get(k) for k in keys}))\n"
            "print(json.dumps({'python': sys.executable, 'cwd': os.getcwd(),"
            " 'policy': os.sched_getscheduler(0)}))\n")
    async with running_worker(command_settings(redis_url, tmp_path)) as worker:
        sub = await submit(producer, ["python", "-c", code], env={"SEED": "7"})
        rec = await producer.wait(sub.job_id, timeout=60)
        logs = await log_lines(redis, sub.job_id)
    assert rec.status is JobStatus.SUCCEEDED, rec.error
    env, where = (json.loads(line) for stream, line in logs if stream == "stdout")
    assert env == {"SEED": "7", "LANG": "C.UTF-8", "AIQ_TEST_WORKER_SECRET": None,
                   "AIQ_JOB_ID": sub.job_id, "AIQ_ATTEMPT": "1", "AIQ_WORKER": worker.name,
                   "AIQ_REPORT_FD": "3", "PYTHONUNBUFFERED": "1",
                   "UV_INDEX_URL": "https://mirror.example/simple",
                   "UV_PROJECT_ENVIRONMENT": None, "UV_LOCKED": None}
    # `python` is the worker's own; the job ran in an empty directory of its own
    assert Path(where["python"]).parent == Path(os.sys.executable).parent
    assert Path(where["cwd"]).parent == tmp_path / "work"
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
    # it runs under the job thread's scheduling policy: JOB_THREAD_POLICY's default, batch
    assert where["policy"] == os.SCHED_BATCH


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


async def test_working_dirs_under_the_data_root_and_from_archives(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    project = tmp_path / "data" / "team" / "project"
    project.mkdir(parents=True)
    (project / "train.py").write_text("print('trained in', __import__('os').getcwd())\n")
    store = tmp_path / "artifacts" / "code"
    store.mkdir(parents=True)
    _tar(store / "code.tar.gz", {"train.py": b"print('from the tarball')\n"})
    with zipfile.ZipFile(store / "code.zip", "w") as zf:
        zf.writestr("train.py", "print('from the zip')\n")
    _tar(store / "evil.tar.gz", {"../escape.py": b"print('out')\n"})
    with zipfile.ZipFile(store / "evil.zip", "w") as zf:
        zf.writestr("../../escape.py", "print('out')\n")
    (tmp_path / "outside").mkdir()
    async with running_worker(command_settings(redis_url, tmp_path, max_concurrent_jobs=4)):
        subs = {
            "data": await submit(producer, ["python", "train.py"], working_dir="team/project"),
            "tar": await submit(producer, ["python", "train.py"],
                                working_dir="artifact://code/code.tar.gz"),
            "zip": await submit(producer, ["python", "train.py"],
                                working_dir="artifact://code/code.zip"),
            "evil_tar": await submit(producer, ["true"],
                                     working_dir="artifact://code/evil.tar.gz"),
            "evil_zip": await submit(producer, ["true"], working_dir="artifact://code/evil.zip"),
            "missing": await submit(producer, ["true"], working_dir="artifact://code/none.zip"),
            "outside": await submit(producer, ["true"], working_dir=str(tmp_path / "outside")),
            "absent": await submit(producer, ["true"], working_dir="team/nothing"),
        }
        recs = {k: await producer.wait(s.job_id, timeout=60) for k, s in subs.items()}
        out = {k: [line for stream, line in await log_lines(redis, subs[k].job_id)
                   if stream == "stdout"] for k in ("data", "tar", "zip")}
    assert out == {"data": [f"trained in {project}"], "tar": ["from the tarball"],
                   "zip": ["from the zip"]}
    codes = {k: r.error.code for k, r in recs.items() if r.error is not None}
    assert codes == {"evil_tar": "archive_invalid", "evil_zip": "archive_invalid",
                     "missing": "archive_not_found", "outside": "working_dir_outside_root",
                     "absent": "working_dir_not_found"}
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "work" / "escape.py").exists()


async def test_a_hung_command_times_out_and_leaves_no_process(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """It ignores SIGTERM and has a grandchild: SIGKILL after the grace period takes both."""
    producer = Producer(redis)
    token = marker()
    script = f"trap '' TERM; sleep {token} & sleep {token}; wait"
    async with running_worker(command_settings(redis_url, tmp_path, command_kill_grace_s=0.5)):
        sub = await submit(producer, ["sh", "-c", script], timeout_s=1.0)
        started = time.monotonic()
        rec = await producer.wait(sub.job_id, timeout=60)
        took = time.monotonic() - started
    assert rec.status is JobStatus.FAILED and rec.error is not None
    assert rec.error.code == "timeout" and "SIGKILL" in rec.error.message
    assert took < 20, took
    await no_process_with(token)


async def test_cancel_ends_a_running_command_within_the_grace_period(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    token = marker()
    grace = 2.0
    async with running_worker(command_settings(redis_url, tmp_path, command_kill_grace_s=grace)):
        sub = await submit(producer, ["sh", "-c", f"sleep {token} & sleep {token}"])
        await eventually(lambda: _running_with(producer, sub.job_id, token), timeout=30,
                         what="the command running")
        asked = time.monotonic()
        await producer.cancel(sub.job_id)
        rec = await producer.wait(sub.job_id, timeout=60)
        took = time.monotonic() - asked
    assert rec.status is JobStatus.CANCELLED
    # the cancel watch (0.2 s here) + SIGTERM, which sleep obeys: well within the grace
    assert took < grace + 3, took
    await no_process_with(token, timeout=5)


async def _running_with(producer: Producer, job_id: str, token: str) -> bool:
    rec = await producer.get(job_id)
    return rec.status is JobStatus.RUNNING and len(processes_with(token)) >= 2


async def test_a_worker_without_command_jobs_never_reads_the_command_stream(
        redis: Redis, redis_url: str, tmp_path: Path) -> None:
    producer = Producer(redis)
    sub = await submit(producer, ["true"])
    high = await submit(producer, ["true"], priority="high")
    assert high.stream == KEYS.stream(JobKind.COMMAND, Priority.HIGH)
    async with running_worker(settings_for(redis_url, tmp_path)) as plain:
        await asyncio.sleep(1.0)  # several reads and reclaim sweeps of this worker
        for s in (sub, high):
            assert (await producer.get(s.job_id)).status is JobStatus.QUEUED
            assert (await redis.xpending(s.stream, GROUP))["pending"] == 0
        info = await redis.hgetall(KEYS.worker(plain.name))
        assert info["command_jobs"] == "False"
    async with running_worker(command_settings(redis_url, tmp_path)) as worker:
        recs = [await producer.wait(s.job_id, timeout=60) for s in (sub, high)]
        assert (await redis.hgetall(KEYS.worker(worker.name)))["command_jobs"] == "True"
    assert all(r.status is JobStatus.SUCCEEDED and r.worker == worker.name for r in recs)
    assert recs[1].priority is Priority.HIGH


async def test_gpu_memory_mb_goes_through_gpu_admission(redis: Redis, redis_url: str,
                                                        tmp_path: Path) -> None:
    producer = Producer(redis)
    devices = ScriptedDevices([ScriptedDevice(total_mb=1000, free_mb=1000)])
    settings = command_settings(redis_url, tmp_path, gpu_headroom_mb=0,
                                admission_recheck_s=0.05)
    code = "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"
    async with running_worker(settings, devices=devices):
        big = await submit(producer, ["true"], gpu_memory_mb=5000)
        fits = await submit(producer, python(code), gpu_memory_mb=600)
        recs = [await producer.wait(s.job_id, timeout=60) for s in (big, fits)]
        out = [f["line"] for _, f in await redis.xrange(KEYS.job_logs(fits.job_id))
               if f["stream"] == "stdout"]
    assert recs[0].error is not None and recs[0].error.code == "gpu_memory_exceeded"
    assert recs[1].status is JobStatus.SUCCEEDED and recs[1].result is not None
    assert recs[1].result["gpu"] == {"device": "cuda:0", "estimate_mb": 600,
                                     "estimate_source": "request"}
    assert out == ["0"]  # the device admission gave it: CUDA_VISIBLE_DEVICES
