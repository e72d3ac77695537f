"""Failover on Sentinel and on Redis Cluster, with durable submit (``SUBMIT_WAIT_REPLICAS``).

Real servers (tests/conftest.py): a master + replica + three sentinels, and a 3-master cluster
with a replica each. While two worker processes run jobs and the gateway takes submits, the
master that holds the diagnostic type (the Sentinel master; on the cluster, the master of the
``{diagnostic}`` slot) is SIGKILLed. Every job the gateway accepted (202) must succeed exactly
once; submits during the failover get 503 with Retry-After and are retried with the same
Idempotency-Key. The 503 window and the workers' recovery time are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiq.redis_server import RedisServer
from aiq.redis_topologies import LocalCluster, LocalSentinel
from streams.keys import QueueKeys
from tests.conftest import topology_url
from tests.gateway.live import live_gateway, read_events
from tests.support import eventually, settings_for, spawn_worker

pytestmark = pytest.mark.timeout(300)
DIAG = QueueKeys("diagnostic")


async def test_durable_submit_waits_for_replicas(request: pytest.FixtureRequest) -> None:
    """202 once the replica has the job; asking for more replicas than exist is a 503 that
    names the job (it was written, and a retry with the same key finds it)."""
    url = topology_url(request, "sentinel")
    async with live_gateway(url, submit_wait_replicas=1) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        r = await http.post("/jobs/training", json={"model_type": "noop"})
        assert r.status_code == 202, r.text
    async with live_gateway(url, submit_wait_replicas=2, submit_wait_timeout_ms=100) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        headers = {"Idempotency-Key": "durable-1"}
        r = await http.post("/jobs/training", json={"model_type": "noop"}, headers=headers)
        assert r.status_code == 503 and r.headers["Retry-After"]
        error = r.json()["error"]
        assert error["code"] == "not_replicated"
        assert error["details"]["replicas_acked"] == 1 and error["details"]["replicas_wanted"] == 2
        job_id = error["details"]["job_id"]
        assert (await http.get(f"/jobs/{job_id}")).status_code == 200


@dataclass
class Submits:
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    refused_at: list[float] = field(default_factory=list)  # monotonic times of 503s
    other: list[str] = field(default_factory=list)


async def _submit_until(http: httpx.AsyncClient, stop: asyncio.Event, out: Submits) -> None:
    """One job at a time, each retried with its own Idempotency-Key until accepted."""
    n = 0
    while not stop.is_set():
        key, n = f"failover-{n}", n + 1
        while True:
            try:
                r = await http.post("/jobs/training", headers={"Idempotency-Key": key},
                                    json={"model_type": "sleep",
                                          "hyperparameters": {"seconds": 0.2, "steps": 2}})
            except httpx.HTTPError as exc:
                out.other.append(repr(exc))
                await asyncio.sleep(0.05)
                continue
            if r.status_code in (200, 202):
                out.accepted[key] = r.json()["job_id"]
                break
            if r.status_code == 503:
                assert r.headers.get("Retry-After")
                out.refused_at.append(time.monotonic())
                await asyncio.sleep(0.05)
                continue
            out.other.append(f"{r.status_code} {r.text}")
            break
        await asyncio.sleep(0.02)


async def _run_failover(url: str, tmp: Path, kill: Callable[[], float]) -> dict[str, Any]:
    settings = settings_for(url, tmp, max_concurrent_jobs=4, lease_timeout_s=3.0)
    workers = [spawn_worker(settings, tmp / f"worker{i}.log") for i in range(2)]
    try:
        async with live_gateway(url, submit_wait_replicas=1, submit_wait_timeout_ms=2000,
                                redis_connect_timeout_s=0.5, redis_socket_timeout_s=3) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
            await eventually(lambda: _workers(http, 2), timeout=60, what="two workers")
            submits, stop = Submits(), asyncio.Event()
            submitter = asyncio.create_task(_submit_until(http, stop, submits))
            await eventually(lambda: _accepted(submits, 20), timeout=60, what="20 accepted")
            before = len(submits.accepted)
            killed_at = time.monotonic()
            failover_s = await asyncio.to_thread(kill)
            await eventually(lambda: _accepted(submits, before + 20), timeout=120,
                             what="20 more accepted after the kill")
            stop.set()
            await asyncio.wait_for(submitter, 60)
            jobs = list(submits.accepted.values())
            views = {j: await _finished(http, j) for j in jobs}
            recovered_at = min(v["_seen_at"] for j, v in views.items()
                               if jobs.index(j) >= before + 1) if len(jobs) > before + 1 else 0
            succeeded = {j: await _count(http, j, "succeeded") for j in jobs}
    finally:
        for w in workers:
            w.kill()
            w.wait(10)
    refused = [t for t in submits.refused_at if t >= killed_at]
    report = {
        "accepted": len(jobs), "failed": [j for j, v in views.items()
                                          if v["status"] != "succeeded"],
        "not_once": {j: n for j, n in succeeded.items() if n != 1},
        "failover_s": round(failover_s, 2),  # kill -> a promoted master serves every slot
        "refused_503": len(refused),
        "window_503_s": round(max(refused) - killed_at, 2) if refused else 0.0,
        "recovery_s": round(recovered_at - killed_at, 2) if recovered_at else None,
        "other": submits.other,
    }
    print(f"\nfailover: {report}")
    return report


async def _workers(http: httpx.AsyncClient, n: int) -> bool:
    r = await http.get("/workers")
    return r.status_code == 200 and len([w for w in r.json()["workers"]
                                         if w["worker_type"] == "diagnostic"]) >= n


async def _accepted(submits: Submits, n: int) -> bool:
    return len(submits.accepted) >= n


async def _finished(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await http.get(f"/jobs/{job_id}/status")
        if r.status_code == 200 and r.json()["status"] in ("succeeded", "failed", "cancelled"):
            return {**r.json(), "_seen_at": time.monotonic()}
        return None
    view: dict[str, Any] = await eventually(check, timeout=120, interval=0.05,
                                            what=f"{job_id} finished")
    return view


async def _count(http: httpx.AsyncClient, job_id: str, event: str) -> int:
    frames, _ = await read_events(http, f"/jobs/{job_id}/events")
    return sum(f.event == event for f in frames)


def _assert_exactly_once(report: dict[str, Any]) -> None:
    assert report["accepted"] >= 40
    assert report["failed"] == [] and report["not_once"] == {}, report
    assert report["other"] == [], report


async def _failover_of(topology: LocalSentinel | LocalCluster, old: RedisServer, url: str,
                       tmp: Path) -> dict[str, Any]:
    """``_run_failover`` with ``old`` (a master) SIGKILLed, then restarted as a supervisor
    (systemd, Kubernetes) would: it comes back as the replica of the promoted one, so durable
    submits work again."""
    def crash_and_come_back() -> float:
        old.kill()
        began = time.monotonic()
        topology.wait_failover(old)
        failover_s = time.monotonic() - began
        topology.restart(old)
        return failover_s

    try:
        return await _run_failover(url, tmp, crash_and_come_back)
    finally:
        if not old.is_running:
            await asyncio.to_thread(topology.restart, old)


async def test_sentinel_failover_loses_no_accepted_job(request: pytest.FixtureRequest,
                                                       tmp_path: Path) -> None:
    url = topology_url(request, "sentinel")
    sentinel: LocalSentinel = request.getfixturevalue("redis_sentinel")
    report = await _failover_of(sentinel, sentinel.current_master(), url, tmp_path)
    _assert_exactly_once(report)


async def test_cluster_failover_loses_no_accepted_job(request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    url = topology_url(request, "cluster")
    cluster: LocalCluster = request.getfixturevalue("redis_cluster")
    report = await _failover_of(cluster, cluster.master_of(DIAG.events), url, tmp_path)
    _assert_exactly_once(report)
