"""HTTP submit throughput: aiq's gateway next to a bare FastAPI + XADD app, same run, same tool.

    uv run python -m bench.http_submit   # defaults: --clients 32,256 --duration 8 --rounds 3
    uv run python -m bench.http_submit --log-level warning --rounds 1   # without the access log

Both servers are one uvicorn process (uvloop + httptools, as ``python -m gateway`` runs) on the
same private Redis; ``wrk`` (Debian's package) posts ``{"model_type": "noop"}`` to
``/jobs/training`` from ``--threads`` threads over N keep-alive connections. The rounds are
interleaved (reference, aiq, reference, aiq, … for each client count) so the machine's noise
hits both alike, and the medians are compared. Each server logs as it does by default: the
reference with uvicorn's access log, aiq with its structured access log at ``LOG_LEVEL=info``;
both write to files. Prints a table and a one-line summary; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console
from rich.table import Table

from bench._redis import client, cpu_seconds, private_redis, workdir

console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)
BODY = '{"model_type": "noop"}'
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log_path}")
                try:
                    r = await http.post(f"http://127.0.0.1:{self.port}/jobs/training",
                                        content=BODY, headers={"Content-Type": "application/json"})
                    if r.status_code < 300:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not answering after {timeout} s")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()


@dataclass
class WrkRun:
    rate: float
    non_2xx: int
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu_us: float  # server CPU per request


@dataclass
class Side:
    runs: dict[int, list[WrkRun]] = field(default_factory=dict)

    def median(self, clients: int) -> WrkRun:
        runs = sorted(self.runs[clients], key=lambda r: r.rate)
        return runs[len(runs) // 2]


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> tuple[float, int, int, float, float]:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) \
        else 0
    errors = sum(int(x) for x in m.groups()) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) else 0
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return rate, non_2xx, errors, p50, p99


def wrk(wrk_exe: str, script: Path, port: int, clients: int, threads: int, duration: float,
        pid: int | None) -> WrkRun:
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(
        [wrk_exe, "-t", str(min(threads, clients)), "-c", str(clients),
         "-d", f"{duration:g}s", "--timeout", "30s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}/jobs/training"],
        capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    cpu = cpu_seconds(pid) - cpu0
    rate, non_2xx, errors, p50, p99 = parse_wrk(out)
    total = max(1.0, rate * duration)
    return WrkRun(rate, non_2xx, errors, p50, p99, cpu / total * 1e6)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", default="32,256", help="comma-separated connection counts")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--log-level", default="info", help="aiq's LOG_LEVEL (default: its default)")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    if not shutil.which(args.wrk):
        raise SystemExit("wrk not found: `apt-get install wrk` (Debian's package)")
    clients = [int(c) for c in args.clients.split(",")]
    with private_redis() as redis_server, workdir() as tmp_name:
        tmp = Path(tmp_name)
        url = redis_server.url
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        ref_port, aiq_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "LOG_JSON")}
        ref = Server("reference", [sys.executable, "-m", "bench._bare_submit", url,
                                   str(ref_port)], env, tmp / "reference.log", ref_port)
        aiq = Server("aiq", [sys.executable, "-m", "gateway"],
                     {**env, "REDIS_URL": url, "PORT": str(aiq_port),
                      "LOG_LEVEL": args.log_level, "MAX_QUEUED": "10000000"},
                     tmp / "gateway.log", aiq_port)
        sides = {"reference": Side(), "aiq": Side()}
        servers = {"reference": ref, "aiq": aiq}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                await server.wait_ready()
            for server in servers.values():  # warm-up: connections, caches, the scripts
                wrk(args.wrk, script, server.port, max(clients), args.threads, 2, None)
            for rnd in range(args.rounds):
                for n in clients:
                    for name, server in servers.items():
                        assert server.process is not None
                        run_ = wrk(args.wrk, script, server.port, n, args.threads,
                                   args.duration, server.process.pid)
                        sides[name].runs.setdefault(n, []).append(run_)
                        console.print(f"round {rnd + 1} {name:9} {n:4} clients: "
                                      f"{run_.rate:8.0f} req/s, non-2xx {run_.non_2xx}, "
                                      f"p50 {run_.p50_ms:.2f} ms")
            r = client(url)
            try:
                queued = await r.xlen("ai:training:{diagnostic}:queue")
            finally:
                await r.aclose()
        finally:
            for server in servers.values():
                server.stop()
        render(args, clients, sides, queued)


def render(args: argparse.Namespace, clients: list[int], sides: dict[str, Side],
           queued: int) -> None:
    load = os.getloadavg()
    console.print(f"\nmachine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                  f"load average {load[0]:.1f} after the run; wrk {args.threads} threads, "
                  f"{args.duration:g} s per run, {args.rounds} rounds interleaved; "
                  f"aiq LOG_LEVEL={args.log_level}")
    table = Table(title="POST /jobs/training {\"model_type\": \"noop\"} (median of rounds)")
    for col in ("clients", "reference req/s", "aiq req/s", "aiq / ref", "non-2xx ref / aiq",
                "p50 ms ref / aiq", "p99 ms ref / aiq", "server CPU µs/req ref / aiq"):
        table.add_column(col, justify="right")
    ratios = []
    for n in clients:
        ref, aiq = sides["reference"].median(n), sides["aiq"].median(n)
        ratio = aiq.rate / ref.rate
        ratios.append(f"{n}: {ratio:.2f}x")
        bad_ref = sum(r.non_2xx + r.errors for r in sides["reference"].runs[n])
        bad_aiq = sum(r.non_2xx + r.errors for r in sides["aiq"].runs[n])
        table.add_row(str(n), f"{ref.rate:,.0f}", f"{aiq.rate:,.0f}", f"[bold]{ratio:.2f}[/]",
                      f"{bad_ref} / {bad_aiq}", f"{ref.p50_ms:.2f} / {aiq.p50_ms:.2f}",
                      f"{ref.p99_ms:.2f} / {aiq.p99_ms:.2f}",
                      f"{ref.server_cpu_us:.0f} / {aiq.server_cpu_us:.0f}")
    console.print(table)
    for n in clients:
        per = ", ".join(f"{a.rate / b.rate:.2f}" for a, b in
                        zip(sides["aiq"].runs[n], sides["reference"].runs[n], strict=True))
        console.print(f"per-round aiq / ref at {n} clients: {per}")
    console.print(f"jobs queued by aiq in Redis: {queued:,} (every 2xx is a real job)")
    console.print(f"summary: http submit aiq/ref {', '.join(ratios)} (target >= 0.8x)")


def main(argv: list[str] | None = None) -> int:
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
