"""One log style: a real gateway process writes JSON lines only (its own, uvicorn's and one
access line per request, the key redacted, job_id bound), and probes stay out of the log at
the default level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aiq.redis_server import free_port
from tests.live_stack import stop
from tests.support import die_with_parent

KEY = "logs-test-key-0123"


def test_gateway_writes_json_lines_only(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "gateway.log"
    env = {**os.environ, "REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(port),
           "API_KEY": KEY}
    env.pop("LOG_JSON", None)
    env.pop("LOG_LEVEL", None)
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=out,
                                stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent)  # noqa: PLW1509 - main thread
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for _ in range(5):
            assert httpx.get(f"{base}/health").status_code == 200  # a probe
        job = httpx.post(f"{base}/jobs/training", json={"model_type": "noop"},
                         headers={"X-API-Key": KEY}).json()["job_id"]
        status = httpx.get(f"{base}/jobs/{job}/status", params={"api_key": KEY})
        assert status.status_code == 200
        assert httpx.get(f"{base}/queues").status_code == 401  # no key
    finally:
        stop(proc)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert KEY not in log.read_text()
    requests = [r for r in records if r.get("event") == "request"]
    assert not [r for r in requests if r["path"] == "/health"], "probes are logged at debug"
    by_path = {r["path"]: r for r in requests}
    assert by_path["/jobs/training"]["status"] == 202
    line = by_path[f"/jobs/{job}/status"]
    assert line["job_id"] == job and line["query"] == "api_key=***" and line["status"] == 200
    assert by_path["/queues"]["status"] == 401  # refused by the key check, still logged
    assert all(isinstance(r["duration_ms"], float | int) for r in requests)
    assert any("Application startup complete" in r.get("event", "") for r in records)
