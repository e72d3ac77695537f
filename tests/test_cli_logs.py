"""``aiq logs JOB_ID [-f]`` (a subprocess, as a user runs it) against a real gateway and worker
running in this event loop: stdout lines to stdout, stderr lines and aiq notes to stderr,
``-f`` follows until the job ends and exits with its outcome."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.consumers.command_support import command_settings, python
from tests.gateway.live import live_gateway, read_events
from tests.support import running_worker

KEY = "s3cret-key"
SCRIPT = ("import sys, time\n"
          "time.sleep(0.5)\n"  # aiq logs -f is following before the first line
          "for i in range(5):\n"
          "    print(f'out {i}', flush=True)\n"
          "    print(f'err {i}', file=sys.stderr, flush=True)\n"
          "sys.exit(3)\n")


async def aiq(url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiq", *args, "--url", url, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "AIQ_API_KEY": KEY})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_aiq_logs_prints_and_follows_a_command_job(redis_url: str, tmp_path: Path) -> None:
    async with live_gateway(redis_url, api_key=KEY, command_worker_types="diagnostic") as gw, \
            running_worker(command_settings(redis_url, tmp_path)), \
            httpx.AsyncClient(base_url=gw.url, headers={"X-API-Key": KEY}, timeout=30) as http:
        response = await http.post("/jobs/command", json={"entrypoint": python(SCRIPT)})
        job_id = response.json()["job_id"]
        followed = await aiq(gw.url, "logs", "-f", job_id)
        _, ended = await read_events(http, f"/jobs/{job_id}/events")
        assert ended
        printed = await aiq(gw.url, "logs", job_id)
        quiet = await aiq(gw.url, "logs", "-q", job_id)
        unknown = await aiq(gw.url, "logs", "job_00000000-0000-0000-0000-000000000000")
    code, out, err = followed
    assert code == 1  # the job failed (exit code 3)
    assert out.splitlines() == [f"out {i}" for i in range(5)]
    assert [line for line in err.splitlines() if line.startswith("err ")] == [
        f"err {i}" for i in range(5)]
    assert "exit code 3" in err and "job failed: command_failed (exit code 3)" in err
    assert printed[0] == 0 and printed[1] == out
    assert quiet[1] == out and quiet[2].splitlines() == [f"err {i}" for i in range(5)]
    assert unknown[0] == 3 and "job_not_found" in unknown[2]
