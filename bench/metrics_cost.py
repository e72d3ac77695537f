"""What a Prometheus scrape of the gateway costs: ``GET /metrics`` latency with 100,000 queued
jobs spread over 100 worker types, as a ratio to ``GET /health`` (one PING) in the same run, and
to ``/metrics`` over the same 100 types with nothing queued.

The collector iterates the catalogue (worker types are data, and a worker refuses a type the
catalogue lacks), so the 93 types beyond the 7 built-in ones are simulated: the gateway runs as
``python -m bench._metrics_gateway 93`` (the catalogue extended in that process only), and this
script writes each type's keys directly on a private redis-server (bench/_redis.py): per type
1,000 queued entries (fields copied from a real submitted job's entry), 10 of them delivered to a
consumer (pending), 5 dead letters, 3 retries waiting, its stats counters, and 3 registered
workers of which one has expired.

Requests alternate ``/health`` and ``/metrics`` on one keep-alive HTTP connection, one at a time,
after a warm-up; Redis's own cost of a scrape comes from INFO commandstats.

    uv run python -m bench.metrics_cost                 # defaults: --types 100 --jobs 100000
    uv run python -m bench.metrics_cost --requests 100  # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from aiq.redis_server import free_port
from bench._metrics_gateway import simulated
from bench._redis import client, percentile, private_redis, workdir
from schemas.catalogue import CATALOGUE
from schemas.requests import TrainingRequest
from schemas.status import JobKind
from streams.keys import GROUP, QueueKeys
from streams.producer import Producer

CHUNK = 5_000  # commands per pipeline while filling


async def _entry_fields(redis: Redis) -> dict[str, str]:
    """The fields of a real job's stream entry (submitted through the producer, then gone)."""
    sub = await Producer(redis).submit_training(TrainingRequest(model_type="noop"))
    keys = QueueKeys("diagnostic")
    [(_, fields)] = await redis.xrange(keys.stream(JobKind.TRAINING))
    await redis.flushall()
    assert fields["job_id"] == sub.job_id
    return dict(fields)


async def fill(url: str, types: list[str], jobs: int) -> None:
    redis = client(url)
    try:
        fields = await _entry_fields(redis)
        per_type = jobs // len(types)
        pipe = redis.pipeline(transaction=False)
        queued = 0
        for n, name in enumerate(types):
            keys = QueueKeys(name)
            for kind in JobKind:
                pipe.xgroup_create(keys.stream(kind), GROUP, id="0", mkstream=True)
            count = per_type + (jobs - per_type * len(types) if n == 0 else 0)
            for i in range(count):
                kind = JobKind.TRAINING if i % 4 else JobKind.INFERENCE
                pipe.xadd(keys.stream(kind), {**fields, "job_id": f"job_bench-{name}-{i}"})
                queued += 1
                if len(pipe) >= CHUNK:
                    await pipe.execute()
            for i in range(5):
                pipe.xadd(keys.dead(JobKind.TRAINING), {"job_id": f"dead-{i}", "reason": "x"})
            pipe.zadd(keys.delayed, {f"job_delayed-{i}": time.time() * 1000 + 3.6e6
                                     for i in range(3)})
            pipe.hset(keys.stats, mapping={"submitted": count, "training:submitted": count,
                                           "training:succeeded": 7, "training:failed": 1,
                                           "inference:succeeded": 3})
            for w in range(3):
                pipe.sadd(keys.workers, f"w{w}")
                if w:
                    pipe.hset(keys.worker(f"w{w}"), mapping={"worker_id": f"w{w}"})
            await pipe.execute()
            await redis.xreadgroup(GROUP, "w1", {keys.stream(JobKind.TRAINING): ">"}, count=10)
        assert queued == jobs
    finally:
        await redis.aclose()


def _gateway(url: str, port: int, extra_types: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "HOST": "127.0.0.1", "PORT": str(port),
           "LOG_LEVEL": "warning"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bench._metrics_gateway",
                                 str(extra_types)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_healthy(http: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gateway not healthy after 60 s")


def _redis_cost(url: str, http: httpx.Client, scrapes: int) -> tuple[float, float]:
    """Redis commands and microseconds of Redis time per scrape (INFO commandstats)."""
    async def stats() -> dict[str, Any]:
        redis = client(url)
        try:
            out: dict[str, Any] = await redis.info("commandstats")
            return out
        finally:
            await redis.aclose()

    asyncio.run(_reset(url))
    for _ in range(scrapes):
        http.get("/metrics").raise_for_status()
    after = asyncio.run(stats())
    skip = ("cmdstat_config", "cmdstat_info", "cmdstat_client", "cmdstat_xread", "cmdstat_hello")
    mine = {k: v for k, v in after.items() if not k.startswith(skip)}
    calls = sum(int(v["calls"]) for v in mine.values())
    usec = sum(int(v["usec"]) for v in mine.values())
    return calls / scrapes, usec / scrapes


async def _reset(url: str) -> None:
    redis = client(url)
    try:
        await redis.config_resetstat()
    finally:
        await redis.aclose()


def measure(http: httpx.Client, requests: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"/health": [], "/metrics": []}
    for i in range(warmup + requests):
        for path in ("/health", "/metrics"):
            started = time.perf_counter()
            http.get(path).raise_for_status()
            if i >= warmup:
                times[path].append((time.perf_counter() - started) * 1000)
    return {k: sorted(v) for k, v in times.items()}


def _summary(times: dict[str, list[float]], http: httpx.Client) -> dict[str, Any]:
    body = http.get("/metrics").text
    samples = [s for f in text_string_to_metric_families(body) for s in f.samples]
    read_s = next(s.value for s in samples if s.name == "aiq_metrics_read_seconds")
    queued = sum(s.value for s in samples if s.name == "aiq_queue_length")
    out: dict[str, Any] = {"series": len(samples), "body_bytes": len(body.encode()),
                           "queued_jobs_exported": int(queued), "read_ms_last": read_s * 1000}
    for path, values in times.items():
        for q in (50, 90, 99):
            out[f"{path} p{q} ms"] = percentile(values, q)
    return out


def run(types_n: int, jobs: int, requests: int, warmup: int) -> dict[str, Any]:
    extra = max(types_n - len(CATALOGUE), 0)
    types = [*CATALOGUE, *simulated(extra)]
    with private_redis() as server, workdir() as tmp:
        log = Path(tmp) / "gateway.log"
        port = free_port()
        proc = _gateway(server.url, port, extra, log)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                _wait_healthy(http, proc, log)
                result: dict[str, Any] = {"redis": server.version, "worker_types": len(types)}
                empty = measure(http, requests, warmup)
                result["empty"] = _summary(empty, http)
                result["empty"]["redis commands/scrape"], result["empty"]["redis us/scrape"] = (
                    _redis_cost(server.url, http, 20))
                started = time.monotonic()
                asyncio.run(fill(server.url, types, jobs))
                result["fill_s"] = round(time.monotonic() - started, 1)
                full = measure(http, requests, warmup)
                result["full"] = _summary(full, http)
                result["full"]["redis commands/scrape"], result["full"]["redis us/scrape"] = (
                    _redis_cost(server.url, http, 20))
        finally:
            proc.terminate()
            proc.wait(15)
    return result


def report(r: dict[str, Any]) -> str:
    e, f = r["empty"], r["full"]
    lines = [f"redis-server {r['redis']}, {r['worker_types']} worker types "
             f"(the catalogue's {len(CATALOGUE)} + simulated), filled in {r['fill_s']} s",
             "",
             "| | nothing queued | " + f"{f['queued_jobs_exported']:,} queued |",
             "|---|---|---|"]
    for key in ("/health p50 ms", "/health p99 ms", "/metrics p50 ms", "/metrics p90 ms",
                "/metrics p99 ms"):
        lines.append(f"| {key} | {e[key]:.2f} | {f[key]:.2f} |")
    for label, num, den in (("/metrics ÷ /health, p50", "/metrics p50 ms", "/health p50 ms"),
                            ("/metrics ÷ /health, p99", "/metrics p99 ms", "/health p99 ms")):
        lines.append(f"| **{label}** | **{e[num] / e[den]:.1f}x** | **{f[num] / f[den]:.1f}x** |")
    lines += [f"| series / body bytes | {e['series']:,} / {e['body_bytes']:,} | "
              f"{f['series']:,} / {f['body_bytes']:,} |",
              f"| Redis commands / µs per scrape | {e['redis commands/scrape']:.0f} / "
              f"{e['redis us/scrape']:.0f} | {f['redis commands/scrape']:.0f} / "
              f"{f['redis us/scrape']:.0f} |",
              "",
              f"/metrics p50 with {f['queued_jobs_exported']:,} queued ÷ with none: "
              f"{f['/metrics p50 ms'] / e['/metrics p50 ms']:.2f}x"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", type=int, default=100, help="worker types (>= 7)")
    parser.add_argument("--jobs", type=int, default=100_000, help="queued jobs, all types")
    parser.add_argument("--requests", type=int, default=300, help="of each path, per phase")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    result = run(args.types, args.jobs, args.requests, args.warmup)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
