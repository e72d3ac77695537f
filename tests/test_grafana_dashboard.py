"""deploy/grafana/aiq.json: every query of the dashboard names only metrics aiq exports (the
names are taken from what the gateway's and a worker's collectors produce, not from a list kept
by hand), and it covers what an operator looks for. That each query is valid PromQL that returns
data is shown against a real Prometheus in tests/test_prometheus_live.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumers.metrics import WorkerMetrics, WorkerState
from gateway.metrics import QueueCollector
from schemas.status import JobKind
from schemas.workers import GpuInfo
from streams.delivery import Delivery
from streams.snapshot import OUTCOMES, SUBMITTED, StreamNumbers, TypeNumbers

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "aiq.json"

# PromQL words that are not metric names: functions and aggregations are recognised by the "("
# that follows them; these are the rest.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "le", "inf", "nan"}


def exported_names() -> set[str]:
    """Every sample name the gateway's /metrics and a worker's METRICS_PORT can produce."""
    counters = dict.fromkeys((*OUTCOMES, SUBMITTED), 1)
    row = TypeNumbers("diagnostic", [StreamNumbers(k.value, 1, 1, 1.0, 1.0, 1, counters)
                                     for k in JobKind], delayed=1, workers=1, fenced=1)
    texts = [generate_latest(QueueCollector([row], 0.01)).decode()]
    worker = WorkerMetrics("diagnostic", frozenset({"noop"}))
    worker.watch(lambda: WorkerState(1, 2, 1, [GpuInfo(index=0, name="g", total_mb=10,
                                                       free_mb=5, reserved_mb=1)]))
    d = Delivery("s", JobKind.TRAINING, "1-0", {"job_id": "job_x"})
    d.deliveries = 1
    worker.started(d, 2)
    worker.ended(d, "failed", 1.0, "diagnostic")
    worker.renewed(1, 1)
    worker.took_back(1)
    texts.append(generate_latest(worker.registry).decode())
    return {s.name for text in texts for family in text_string_to_metric_families(text)
            for s in family.samples}


def queries(dashboard: dict[str, Any]) -> list[str]:
    out = []
    for panel in dashboard["panels"]:
        out += [t["expr"] for t in panel.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append(re.sub(r"^label_values\((\w+),\s*\w+\)$", r"\1", query))
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", " ", text)  # selectors' label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)  # dashboard variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        if text[match.end():].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(word)
    return names


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def test_the_name_extraction_itself() -> None:
    assert metric_names('histogram_quantile(0.9, sum by (le, worker_type) (rate('
                        'aiq_job_duration_seconds_bucket{worker_type=~"$worker_type", '
                        'outcome="succeeded"}[$__rate_interval])))') == {
        "aiq_job_duration_seconds_bucket"}
    assert metric_names("max by (worker_type) (a_b) - on (x) group_left c_total > bool 0") == {
        "a_b", "c_total"}


def test_every_query_names_only_metrics_aiq_exports() -> None:
    exported = exported_names()
    assert {"aiq_queue_length", "aiq_jobs_total", "aiq_job_duration_seconds_bucket",
            "aiq_gpu_memory_used_bytes"} <= exported
    dashboard = load()
    used: set[str] = set()
    for expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{sorted(names - exported)} in {expr!r} is not exported"
        used |= names
    # What the issue asks the dashboard to show: depth, throughput, latency, GPU, failures.
    assert {"aiq_queue_length", "aiq_jobs_total", "aiq_job_duration_seconds_bucket",
            "aiq_job_queue_wait_seconds_bucket", "aiq_gpu_memory_used_bytes",
            "aiq_gpu_memory_total_bytes", "aiq_job_failures_total"} <= used


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = load()
    assert dashboard["uid"] == "aiq-overview" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
    latency = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
               if "histogram_quantile" in t["expr"]]
    assert {q for e in latency for q in re.findall(r"histogram_quantile\((0\.\d+)", e)} == {
        "0.5", "0.9", "0.99"}
