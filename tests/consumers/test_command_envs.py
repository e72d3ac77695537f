"""A command job's own uv environment, built from local things only (a wheel the test makes,
UV_OFFLINE=1: no index is reached): built once per requirements or lock and cached, even when
two jobs ask for it at the same time; aiq.report works there without aiq installed; a failed
build fails the job with env_build_failed and uv's own words."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumers.command.uvenv import MARKER
from schemas.status import JobStatus
from streams.keys import QueueKeys
from streams.producer import Producer
from tests.consumers.command_support import command_settings, local_wheel, submit
from tests.support import running_worker

pytestmark = pytest.mark.slow
KEYS = QueueKeys("diagnostic")
PROBE = ("import json, sys, aiq, aiqtestpkg\n"
         "aiq.report(step=1, value=aiqtestpkg.VALUE)\n"
         "print(json.dumps({'prefix': sys.prefix, 'value': aiqtestpkg.VALUE}))\n")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_OFFLINE", "1")  # UV_* reach uv (COMMAND_ENV_PASSTHROUGH)
    if shutil.which("uv") is None:
        pytest.fail("uv is not on PATH", pytrace=False)


async def stdout_json(redis: Redis, job_id: str) -> dict[str, object]:
    lines = [f["line"] for _, f in await redis.xrange(KEYS.job_logs(job_id))
             if f["stream"] == "stdout"]
    out: dict[str, object] = json.loads(lines[-1])
    return out


async def notes(redis: Redis, job_id: str) -> list[str]:
    return [f["line"] for _, f in await redis.xrange(KEYS.job_logs(job_id))
            if f["stream"] == "aiq"]


async def test_requirements_env_is_built_once_and_reused(redis: Redis, redis_url: str,
                                                         tmp_path: Path) -> None:
    wheel = local_wheel(tmp_path / "wheels")
    producer = Producer(redis)
    settings = command_settings(redis_url, tmp_path, max_concurrent_jobs=2)
    async with running_worker(settings):
        both = [await submit(producer, ["python", "-c", PROBE], requirements=[str(wheel)])
                for _ in range(2)]  # at the same time: one builds, the other waits for it
        first = [await producer.wait(s.job_id, timeout=180) for s in both]
        again = await submit(producer, ["python", "-c", PROBE], requirements=[str(wheel)])
        third = await producer.wait(again.job_id, timeout=120)
        runs = [*both, again]
        outs = [await stdout_json(redis, s.job_id) for s in runs]
        built = [sum(n.startswith("building environment") for n in await notes(redis, s.job_id))
                 for s in runs]
    recs = [*first, third]
    assert all(r.status is JobStatus.SUCCEEDED for r in recs), [r.error for r in recs]
    envs = [r.result["environment"] for r in recs if r.result]
    assert {e["kind"] for e in envs} == {"requirements"} and len({e["key"] for e in envs}) == 1
    assert sorted(e["cached"] for e in envs) == [False, True, True]
    assert sorted(built) == [0, 0, 1]  # built once, by one job
    key = str(envs[0]["key"])
    home = settings.command_env_root / key
    assert (home / MARKER).is_file()
    assert {o["prefix"] for o in outs} == {str(home)} and {o["value"] for o in outs} == {42}
    assert all(r.result is not None and r.result["metrics"] == {"value": 42.0} for r in recs)
    assert not list(settings.command_env_root.glob(f".{key}.*.tmp"))  # no build left over


async def test_lock_in_the_working_dir_makes_the_env(redis: Redis, redis_url: str,
                                                     tmp_path: Path) -> None:
    project = tmp_path / "data" / "proj"
    wheel = local_wheel(project)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        'dependencies = ["aiqtestpkg"]\n'
        f'[tool.uv.sources]\naiqtestpkg = {{ path = "{wheel.name}" }}\n')
    # Not the suite's own UV_LOCKED (.ci/run sets it for aiq's lock): this project's lock is new.
    lock_env = {k: v for k, v in os.environ.items() if k not in ("UV_LOCKED", "UV_FROZEN")}
    await asyncio.to_thread(subprocess.run, ["uv", "lock", "--offline", "--quiet"],
                            cwd=project, check=True, timeout=120, env=lock_env)
    producer = Producer(redis)
    async with running_worker(command_settings(redis_url, tmp_path)):
        sub = await submit(producer, ["python", "-c", PROBE], working_dir="proj")
        rec = await producer.wait(sub.job_id, timeout=180)
        out = await stdout_json(redis, sub.job_id)
    assert rec.status is JobStatus.SUCCEEDED, rec.error
    assert rec.result is not None and rec.result["environment"]["kind"] == "lock"
    assert out["value"] == 42 and str(out["prefix"]).startswith(str(tmp_path / "envs"))


async def test_a_failed_build_fails_the_job_with_uvs_output(redis: Redis, redis_url: str,
                                                           tmp_path: Path) -> None:
    producer = Producer(redis)
    settings = command_settings(redis_url, tmp_path)
    async with running_worker(settings):
        sub = await submit(producer, ["python", "-c", "print(1)"],
                           requirements=["aiq-no-such-package-anywhere==9.9.9"])
        rec = await asyncio.wait_for(producer.wait(sub.job_id, timeout=180), 200)
    assert rec.status is JobStatus.FAILED and rec.error is not None
    assert rec.error.code == "env_build_failed" and not rec.error.retryable
    assert "aiq-no-such-package-anywhere" in rec.error.message  # the tail of uv's own output
    assert [p.name for p in settings.command_env_root.iterdir()
            if not p.name.startswith(".")] == []  # nothing half built is left as an env
