"""Which worker types this environment can run: framework installed at the promised version and,
for GPU types, a GPU that NVML can see. Used by ``aiq types`` and ``aiq up``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet

from schemas.catalogue import CATALOGUE, Device, WorkerType

__all__ = [
    "Availability",
    "availability",
    "catalogue_availability",
    "install_hint",
    "visible_gpus",
]


@dataclass(frozen=True, slots=True)
class Availability:
    worker_type: WorkerType
    installed_version: str | None  # the framework distribution's version, if installed
    problem: str | None = None  # why the type cannot run here; None when it can
    fix: str = ""  # what to do about the problem

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def hint(self) -> str:
        """One line for a type that cannot run here: what is missing and how to get it."""
        return f"{self.worker_type.name}: {self.problem} — {self.fix}"


def install_hint(wt: WorkerType) -> str:
    """The command that installs a worker type's stack into the project environment."""
    return "uv sync" if wt.extra is None else f"uv sync --extra {wt.extra}"


@cache
def visible_gpus() -> int:
    """How many GPUs NVML sees (0 without nvidia-ml-py, a driver or a device)."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return 0
    finally:
        pynvml.nvmlShutdown()


def availability(wt: WorkerType) -> Availability:
    """Whether ``wt`` can run in this environment (the same checks a worker makes at start)."""
    install = install_hint(wt)
    try:
        installed = version(wt.module)
    except PackageNotFoundError:
        return Availability(wt, None, "not installed", install)
    if wt.extra is not None and installed not in SpecifierSet(wt.version_spec):
        return Availability(wt, installed, f"{wt.module} {installed} is installed, the type "
                                           f"needs {wt.version_spec}", install)
    if wt.device is Device.GPU:
        if not _distribution_installed("nvidia-ml-py"):
            return Availability(wt, installed, "NVML bindings not installed", install)
        if visible_gpus() == 0:
            return Availability(wt, installed, "no GPU visible", "skipped (needs an NVIDIA GPU)")
    return Availability(wt, installed)


def _distribution_installed(name: str) -> bool:
    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


def catalogue_availability() -> list[Availability]:
    """Every worker type of the catalogue, in catalogue order."""
    return [availability(wt) for wt in CATALOGUE.values()]
