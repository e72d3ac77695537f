"""The Dockerfiles of deploy/docker/: hadolint finds nothing (not even an info-level note), and
the runtime stage of each aiq image has what docs/DEPLOYMENT.md promises. Building them needs a
Docker daemon and a package index: bench/docker_smoke.py does that, with timings."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from schemas.catalogue import CATALOGUE
from tests.deploy_tools import DEPLOY, ROOT, hadolint_binary

DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))


def test_every_image_has_a_dockerfile() -> None:
    assert {p.name for p in DOCKERFILES} == {"worker.Dockerfile", "gateway.Dockerfile",
                                             "nginx.Dockerfile", "redis.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    done = subprocess.run([str(hadolint_binary()), "--no-color", "--failure-threshold", "info",
                           str(dockerfile)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        word, _, rest = whole.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def _one(stage: list[tuple[str, str]], word: str) -> str:
    found = [args for w, args in stage if w == word]
    assert len(found) == 1, (word, found)
    return found[0]


@pytest.mark.parametrize("name", ["worker", "gateway"])
def test_images_install_the_lock_without_dev_as_a_non_root_user_under_tini(name: str) -> None:
    path = DEPLOY / "docker" / f"{name}.Dockerfile"
    steps = instructions(path)
    syncs = [args for word, args in steps if word == "RUN" and "uv sync" in args]
    assert syncs and all("--locked" in s and "--no-dev" in s for s in syncs), syncs
    if name == "worker":
        assert all('--extra "$EXTRA"' in s for s in syncs)
    assert steps[0] == ("ARG", "BASE_IMAGE=debian:bookworm-slim")
    assert all(args.split()[0] in ("${BASE_IMAGE}", "python") for w, args in steps
               if w == "FROM")
    stage = final_stage(path)
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", _one(stage, "USER"))  # numeric, not root
    assert json.loads(_one(stage, "ENTRYPOINT")) == ["/usr/bin/tini", "--"]
    health = _one(stage, "HEALTHCHECK")
    if name == "worker":
        assert health.endswith('CMD ["aiq", "health", "--worker"]')
        assert json.loads(_one(stage, "CMD")) == ["aiq", "worker"]
        env = _one(stage, "ENV")
        assert "DATA_ROOT=/data" in env and "ARTIFACT_ROOT=/artifacts" in env
        assert "WORKER_TYPE=${WORKER_TYPE}" in env
    else:
        assert "aiq health --url" in health and "${PORT}" in health
        assert json.loads(_one(stage, "CMD")) == ["aiq", "gateway"]
        assert "HOST=0.0.0.0" in _one(stage, "ENV")


def test_the_worker_image_checks_its_type_and_extra_at_build_time() -> None:
    """The runtime stage refuses, at build time, an EXTRA that is not the type's own extra,
    using the catalogue itself (so every catalogue type is buildable with its extra)."""
    check = next(args for word, args in final_stage(DEPLOY / "docker" / "worker.Dockerfile")
                 if word == "RUN" and "CATALOGUE" in args)
    assert "(wt.extra or '') == '${EXTRA}'" in check
    assert "version(wt.module) in SpecifierSet(wt.version_spec)" in check
    assert {wt.extra for wt in CATALOGUE.values()} >= {"sklearn", "pytorch_2_0", "pytorch_2_1",
                                                       "pytorch_2_0_gpu", "pytorch_2_1_gpu",
                                                       "tensorflow", None}


def test_the_build_context_lets_through_only_what_the_images_copy() -> None:
    """.dockerignore starts from nothing (.venvs/ alone is GBs) and allows exactly the paths
    the Dockerfiles COPY."""
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied: set[str] = set()
    for path in DOCKERFILES:
        for word, args in instructions(path):
            if word == "COPY" and not args.startswith("--from"):
                copied.update(a.rstrip("/") for a in args.split()[:-1])
    assert all(any(c == a or c.startswith(a + "/") for a in allowed) for c in copied), (
        copied, allowed)
    assert all((ROOT / c).exists() for c in copied)
