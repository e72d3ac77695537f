"""``bench.cluster_bench`` end to end at a tiny size: it starts its own Redis, Redis Cluster and
Sentinel servers and worker processes, drains every job on both topologies and measures durable
submit. The figures themselves are not checked (a benchmark asserts nothing); that it runs,
that the drains verify, and that every figure is there, is."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aiq.redis_server import find_redis_server
from bench.cluster_bench import master_port_of, spread_types

ROOT = Path(__file__).resolve().parents[1]


def test_types_spread_over_every_master() -> None:
    ranges = [(0, 5460, 1), (5461, 10922, 2), (10923, 16383, 3)]  # redis-cli's 3-master split
    types = spread_types(6, ranges)
    assert [master_port_of(t, ranges) for t in types] == [1, 2, 3, 1, 2, 3]
    assert len(set(types)) == 6


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_cluster_bench_runs_end_to_end(tmp_path: Path) -> None:
    executable = find_redis_server()
    if not (Path(executable).with_name("redis-cli").exists() or shutil.which("redis-cli")):
        pytest.skip("redis-cli is needed to create a Redis Cluster")
    out = tmp_path / "cluster_bench.json"
    cmd = [sys.executable, "-m", "bench.cluster_bench", "--jobs", "50", "--rounds", "1",
           "--durable-submits", "60", "--latency-iterations", "20", "--warmup", "5",
           "--redis-server", executable, "--json", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "COLUMNS": "200"})
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its redis-servers and workers too
        output, _ = proc.communicate()
        pytest.fail(f"cluster_bench did not finish in 120 s:\n{output.decode()[-4000:]}")
    text = output.decode()
    assert proc.returncode == 0, text[-4000:]
    assert "cluster / single" in text and "durable submit" in text

    data = json.loads(out.read_text())
    drains = data["throughput"]
    for topology in ("single", "cluster"):
        (drain,) = drains[topology]
        assert drain["jobs"] == 150 and drain["checks"]["ok"], drain["checks"]
        assert drain["span_s"] > 0
    assert drains["ratio_cluster_single"] > 0
    durable = {(d["topology"], d["mode"]): d for d in data["durable"]}
    assert set(durable) == {(t, m) for t in ("sentinel", "cluster")
                            for m in ("w=0", "w=1", "w=1 without WAIT")}
    assert all(d["n"] == 20 and d["rate"] > 0 for d in durable.values())
