"""docs/MONITORING.md stays true to the code: it documents every metric the gateway and a
worker export, and names no aiq metric that neither exports."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_grafana_dashboard import exported_names

DOC = Path(__file__).resolve().parent.parent / "docs" / "MONITORING.md"
_SUFFIXES = ("_bucket", "_sum", "_count")


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_exported_metric_is_documented() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"`(aiq_[a-z_]+)`", text))
    exported = {_base(n) for n in exported_names() if n.startswith("aiq_")}
    assert exported - documented == set(), "exported but not in docs/MONITORING.md"
    assert "`process_*`" in text
    # Each documented name (in a table's first column) is exported.
    rows = set(re.findall(r"^\| `(aiq_[a-z_]+)` \|", text, flags=re.MULTILINE))
    assert rows - exported == set(), "documented but not exported"
    assert len(rows) == len(exported)
