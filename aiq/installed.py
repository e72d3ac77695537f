"""Which worker types can run here, and with which python: the framework installed at the
promised version (in this environment, or in the type's own ``.venvs/<extra>``, see
:mod:`aiq.envs`) and, for GPU types, a GPU. Used by ``aiq types``, ``aiq env list``,
``aiq worker`` and ``aiq up``."""

from __future__ import annotations

import glob
import importlib.util
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.specifiers import SpecifierSet

from aiq.envs import dist_version, env_dir, env_python, has_own_env, install_command
from consumers.gpu import visible_gpu_count
from schemas.catalogue import CATALOGUE, Device, WorkerType

__all__ = [
    "Availability",
    "availability",
    "catalogue_availability",
    "install_hint",
    "visible_gpus",
]

NVML_DIST = "nvidia-ml-py"


@dataclass(frozen=True, slots=True)
class Availability:
    worker_type: WorkerType
    installed_version: str | None  # the framework distribution's version, if installed
    problem: str | None = None  # why the type cannot run here; None when it can
    fix: str = ""  # what to do about the problem
    # The interpreter that has the framework at the promised version (None: none here), even
    # when a missing GPU keeps the type from running; and the type's own environment, when that
    # interpreter is its (None: this environment).
    python: Path | None = None
    env: Path | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def hint(self) -> str:
        """One line for a type that cannot run here: what is missing and how to get it."""
        return f"{self.worker_type.name}: {self.problem} — {self.fix}"


def install_hint(wt: WorkerType) -> str:
    """The command that makes a worker type runnable: ``aiq env install <type>`` for a type with
    its own environment, ``uv sync [--extra sklearn]`` for the main environment's types."""
    return install_command(wt)


@cache
def visible_gpus() -> int:
    """How many GPUs NVML sees (consumers.gpu, the one module that talks to NVML); without
    nvidia-ml-py in this environment, the NVIDIA device files the driver made (0 without a
    driver or a device)."""
    if importlib.util.find_spec("pynvml") is None:
        return len(glob.glob("/dev/nvidia[0-9]*"))
    return visible_gpu_count()


def _version_here(dist: str) -> str | None:
    """The version of ``dist`` installed in this environment, if any."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _fits(wt: WorkerType, installed: str) -> bool:
    return wt.extra is None or installed in SpecifierSet(wt.version_spec)


def _gpu_problem(wt: WorkerType, nvml_installed: bool) -> tuple[str, str] | None:
    if wt.device is not Device.GPU:
        return None
    if not nvml_installed:
        return "NVML bindings not installed", install_hint(wt)
    if visible_gpus() == 0:
        return "no GPU visible", "skipped (needs an NVIDIA GPU)"
    return None


def _checked(wt: WorkerType, installed: str, python: Path, env: Path | None,
             nvml_installed: bool) -> Availability:
    gpu = _gpu_problem(wt, nvml_installed)
    problem, fix = gpu if gpu is not None else (None, "")
    return Availability(wt, installed, problem, fix, python=python, env=env)


def availability(wt: WorkerType) -> Availability:
    """Whether ``wt`` can run here (the checks a worker makes at start) and with which python:
    this environment's when it has the framework at the promised version, else the type's own
    environment's."""
    here = _version_here(wt.module)
    if here is not None and _fits(wt, here):
        return _checked(wt, here, Path(sys.executable), None,
                        _version_here(NVML_DIST) is not None)
    if not has_own_env(wt):
        if here is None:
            return Availability(wt, None, "not installed", install_hint(wt))
        return Availability(wt, here, f"{wt.module} {here} is installed, the type needs "
                                      f"{wt.version_spec}", install_hint(wt))
    assert wt.extra is not None
    env = env_dir(wt.extra)
    python = env_python(env)
    found = dist_version(env, wt.module) if python.exists() else None
    if found is None:
        return Availability(wt, None, "not installed", install_hint(wt))
    if not _fits(wt, found):
        return Availability(wt, found, f"{env} has {wt.module} {found}, the type needs "
                                       f"{wt.version_spec}", install_hint(wt))
    return _checked(wt, found, python, env, dist_version(env, NVML_DIST) is not None)


def catalogue_availability() -> list[Availability]:
    """Every worker type of the catalogue, in catalogue order."""
    return [availability(wt) for wt in CATALOGUE.values()]
