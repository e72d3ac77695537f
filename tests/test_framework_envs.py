"""The framework suites, each in its own environment, from the README's one test command.

torch 2.0, torch 2.1 and tensorflow cannot share an environment, so in the main one their suites
in ``tests/frameworks/`` skip. Here each environment is made (or checked) the way
``aiq env install`` makes it, then its python runs pytest on the matching suites. A run passes
only when pytest exits 0 having passed tests: no module of it may skip (e.g. for a missing
import). The inner output goes to a log whose tail a failure shows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from aiq.envs import project_root
from tests.envs import ensure_env

INNER_RUN_VAR = "AIQ_INNER_FRAMEWORK_RUN"
if os.environ.get(INNER_RUN_VAR):  # never recurse from an inner run
    pytest.skip("inside an inner framework run", allow_module_level=True)

# extra -> the suites its environment runs (globs under the project root)
SUITES = {
    "pytorch_2_0": "tests/frameworks/test_pytorch_*.py",
    "pytorch_2_1": "tests/frameworks/test_pytorch_*.py",
    "tensorflow": "tests/frameworks/test_tensorflow_*.py",
}
INNER_TIMEOUT_S = 1500
pytestmark = [pytest.mark.slow, pytest.mark.timeout(INNER_TIMEOUT_S + 300)]


@dataclass
class Outcome:
    """What an inner run's JUnit report says."""

    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    collection_skips: list[str] = field(default_factory=list)  # modules skipped whole

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped


def read_junit(path: Path) -> Outcome:
    out = Outcome()
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for name in ("tests", "failures", "errors", "skipped"):
            setattr(out, name, getattr(out, name) + int(suite.get(name, "0")))
        for case in suite.iter("testcase"):
            skip = case.find("skipped")
            if skip is not None and skip.get("message") == "collection skipped":
                out.collection_skips.append(f"{case.get('name')}: {skip.text}")
    return out


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_in_own_group(argv: list[str], cwd: Path, env: dict[str, str], out: IO[bytes],
                     timeout: float) -> int | None:
    """Run ``argv`` in its own process group; its exit code, or None when it ran past
    ``timeout`` (then the whole group is killed: the inner run's workers and Redis too, so
    nothing it started outlives it)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of a run that ended, too
        proc.wait()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("framework-envs")


@pytest.mark.parametrize("extra", list(SUITES))
def test_framework_suites_pass_in_their_own_environment(extra: str, logs: Path) -> None:
    python = ensure_env(extra, logs)
    root = project_root()
    suites = sorted(str(p.relative_to(root)) for p in root.glob(SUITES[extra]))
    assert suites, f"no suites match {SUITES[extra]}"
    log, junit = logs / f"pytest-{extra}.log", logs / f"pytest-{extra}.xml"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env[INNER_RUN_VAR] = extra
    argv = [str(python), "-m", "pytest", *suites, "-p", "no:cacheprovider", "-q",
            f"--junitxml={junit}"]
    with log.open("wb") as out:
        code = run_in_own_group(argv, root, env, out, INNER_TIMEOUT_S)
    if code is None:
        pytest.fail(f"{extra}: pytest ran past {INNER_TIMEOUT_S}s; {log}:\n{_tail(log)}")
    where = f"{extra}: {' '.join(argv[:3])} {' '.join(suites)} (log: {log})"
    assert junit.exists(), f"{where} exited {code} without a report:\n{_tail(log)}"
    outcome = read_junit(junit)
    assert code == 0, f"{where} exited {code}: {outcome}\n{_tail(log)}"
    assert not outcome.collection_skips, f"{where}: modules skipped whole: " + "; ".join(
        outcome.collection_skips)
    assert outcome.passed > 0, f"{where}: no test passed: {outcome}\n{_tail(log)}"
    print(f"{where}: {outcome.passed} passed, {outcome.skipped} skipped")
