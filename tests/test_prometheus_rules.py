"""deploy/prometheus: the alert rules load (``promtool check rules``), behave as their unit
tests say (``promtool test rules alerts_test.yml``), and the example config is valid
(``promtool check config``). promtool comes with Debian's ``prometheus`` package, which .ci/run
installs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus; .ci/run "
    "does it)")


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True,
                          timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_the_alert_rules_load() -> None:
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", "alerts.yml")


def test_the_alert_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_alert_has_a_unit_test() -> None:
    rules = (DEPLOY / "alerts.yml").read_text()
    tests = (DEPLOY / "alerts_test.yml").read_text()
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines()
             if line.strip().startswith("- alert:")]
    assert len(names) == 5
    for name in names:
        assert f"alertname: {name}" in tests, name


def test_the_example_scrape_config_is_valid() -> None:
    assert "is valid prometheus config file syntax" in promtool(
        "check", "config", "prometheus.yml")
