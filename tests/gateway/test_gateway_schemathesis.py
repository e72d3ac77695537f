"""Property-based run over the gateway's whole OpenAPI spec (schemathesis) against a real
gateway: ``python -m gateway`` (uvicorn) in its own process, on a free port, on the session's
redis-server.

Every operation of ``/openapi.json`` gets up to ``MAX_EXAMPLES`` generated requests that the
spec calls valid and as many that it calls invalid (hypothesis, derandomized: the same cases
every run). Every response must be no 5xx and what the spec documents: status code, content
type, headers, body (SSE events included). The run is made twice: without ``API_KEY``, and
with it, the key sent as ``X-API-Key`` (the spec's ``ApiKeyHeader``); there the invalid cases
include a wrong or missing key, and ``ignored_auth`` sends requests the key let through again
without it and with a wrong one, which must be refused.

Before the run a few real jobs are submitted (no worker runs, so they stay queued) and some
cancelled; a job id in a path is then sometimes one of theirs. ``GET /jobs/{job_id}/events``
streams until its job ends, so it is only ever pointed at the cancelled ones (their streams end
after the replay), and schemathesis reads no event stream longer than ``REQUEST_TIMEOUT_S``.

Counts and timings: bench/RESULTS.md. What it found, and the fixes' regression tests:
tests/gateway/test_gateway_openapi.py. One subtest per operation and mode (pytest's
``subtests``): a failure names both, and schemathesis' report shows the shrunk request as curl.

This drives schemathesis through its Python API (``APIOperation.as_strategy`` with hypothesis)
rather than ``schemathesis.pytest.from_fixture``, which fails on pytest 9.2 (it reads the
item's ``_nodeid``, an attribute pytest 9.2 no longer has: AttributeError).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, CheckFunction, GenerationMode

from aiq.redis_server import RedisServer, free_port
from tests.support import die_with_parent

KEY = "fuzz-api-key-0123"
SEED = 20261203
MAX_EXAMPLES = 15  # per operation and mode (valid / invalid): 439 cases over both runs of the
# 10 operations before GET /metrics
REQUEST_TIMEOUT_S = 5.0  # per request; also the most time an event stream is read, in all
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
EVENTS_PATH = "/jobs/{job_id}/events"


@dataclass
class Gateway:
    name: str  # "open" or "api_key"
    url: str
    api_key: str | None
    proc: subprocess.Popen[bytes]
    log: Path
    queued_jobs: list[str] = field(default_factory=list)
    ended_jobs: list[str] = field(default_factory=list)  # cancelled
    cases: int = 0  # requests made for generated cases (shrinking a failure included)
    statuses: Counter[int] = field(default_factory=Counter)  # of the responses to them

    @property
    def jobs(self) -> list[str]:
        return [*self.queued_jobs, *self.ended_jobs]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def _start(redis_url: str, tmp: Path, api_key: str | None) -> Gateway:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(port),
           "LOG_LEVEL": "warning", "COMMAND_WORKER_TYPES": "diagnostic"}  # 403 without a key
    env.pop("API_KEY", None)
    if api_key:
        env["API_KEY"] = api_key
    name = "api_key" if api_key else "open"
    log = tmp / f"gateway-{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)  # noqa: PLW1509 - from the main thread
    gateway = Gateway(name, f"http://127.0.0.1:{port}", api_key, proc, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{gateway.url}/health", timeout=1).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise AssertionError(f"the gateway did not come up\n{gateway.logs()}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _seed(gateway: Gateway) -> None:
    """Four real jobs: two stay queued, two are cancelled (ended)."""
    with httpx.Client(base_url=gateway.url, headers=gateway.headers, timeout=10) as client:
        for i, model_type in enumerate(("noop", "sleep", "noop", "sleep")):
            r = client.post("/jobs/training", json={"model_type": model_type})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            if i % 2:
                r = client.post(f"/jobs/{job_id}/cancel")
                assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
                gateway.ended_jobs.append(job_id)
            else:
                gateway.queued_jobs.append(job_id)


@pytest.fixture(scope="module", params=["open", "api_key"])
def gateway(request: pytest.FixtureRequest, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    redis_server.ensure_running()
    with redis_sync.Redis.from_url(redis_server.url) as client:
        client.flushall()
    api_key = KEY if request.param == "api_key" else None
    gateway = _start(redis_server.url, tmp_path_factory.mktemp("schemathesis"), api_key)
    try:
        _seed(gateway)
        yield gateway
    finally:
        _stop(gateway.proc)


def _config(gateway: Gateway) -> schemathesis.Config:
    config: dict[str, Any] = {"seed": SEED, "request-timeout": REQUEST_TIMEOUT_S}
    if gateway.api_key:
        config["auth"] = {"openapi": {"ApiKeyHeader": {"api_key": gateway.api_key}}}
    return schemathesis.Config.from_dict(config)


def _checks(gateway: Gateway) -> list[CheckFunction]:
    names = [*CHECKS, "ignored_auth"] if gateway.api_key else CHECKS
    return [getattr(schemathesis.checks, name) for name in names]


def _strategy(operation: APIOperation, mode: GenerationMode,
              gateway: Gateway) -> st.SearchStrategy[Case]:
    """Cases of ``operation``; where it takes a job id, sometimes that of a real job."""
    generated = operation.as_strategy(mode)
    if "job_id" not in {p.name for p in operation.path_parameters}:
        return generated
    # The event stream of a job that has not ended would last until the request timeout.
    known = gateway.ended_jobs if operation.path == EVENTS_PATH else gateway.jobs
    existing = st.sampled_from(known).flatmap(
        lambda job_id: operation.as_strategy(mode, path_parameters={"job_id": job_id}))
    return st.one_of(generated, existing)


def _run(operation: APIOperation, mode: GenerationMode, gateway: Gateway,
         session: requests.Session) -> None:
    """Up to ``MAX_EXAMPLES`` cases of one operation in one mode, each sent and checked."""
    ran = 0
    checks = _checks(gateway)

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=_strategy(operation, mode, gateway))
    def run(case: Case) -> None:
        nonlocal ran
        ran += 1
        gateway.cases += 1
        response = case.call_and_validate(session=session, checks=checks)
        gateway.statuses[response.status_code] += 1

    try:
        run()
    except Unsatisfiable:
        # Negative mode, for an operation where every request is valid (no parameters, or
        # free-form strings only): there is no invalid one to make.
        assert mode is GenerationMode.NEGATIVE and ran == 0, "no case could be generated"


# ~5 s each here (gateway start 1.4 s + 3-4 s of cases), ~9 s with both cores busy: 3x that.
@pytest.mark.timeout(30)
def test_every_answer_is_what_the_spec_documents(gateway: Gateway,
                                                 subtests: pytest.Subtests) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", config=_config(gateway))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 15
    started = time.monotonic()
    with requests.Session() as session:
        for operation in operations:
            for mode in MODES:
                with subtests.test(operation=operation.label, mode=mode.value):
                    _run(operation, mode, gateway, session)
    print(f"\nschemathesis [{gateway.name}]: {len(operations)} operations, {gateway.cases} "
          f"cases in {time.monotonic() - started:.1f} s; "
          f"statuses {dict(sorted(gateway.statuses.items()))}")
    assert gateway.proc.poll() is None, gateway.logs()
    # The run reached the routes: the key (when set) let requests through, and real jobs
    # were found (200) as well as unknown ones (404).
    assert gateway.statuses[200] and gateway.statuses[404] and gateway.statuses[422]
    if gateway.api_key:
        assert gateway.statuses[401]
