"""Start-up checks of a worker process: each failure is one clear line and exit code 2."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet

from consumers.affinity import pin
from consumers.artifact_store import ArtifactStore, StoreError, open_store
from consumers.frameworks import load_framework
from consumers.frameworks.base import Framework
from consumers.gpu import GpuDevices, GpuUnavailable, NvmlMissing, open_devices
from consumers.settings import WorkerSettings
from schemas.catalogue import CATALOGUE, Device
from schemas.workers import GpuInfo


class StartupError(Exception):
    """The worker cannot serve its type here. The message is the one line users read."""


def pin_cpus(settings: WorkerSettings) -> None:
    """WORKER_CPUS: confine this process to those CPUs before it starts any thread (each
    thread it starts inherits the set: consumers/affinity.py)."""
    if settings.cpus is None:
        return
    try:
        pin(settings.cpus)
    except ValueError as exc:
        raise StartupError(f"WORKER_CPUS={settings.worker_cpus}: {exc}") from None


def check_framework(settings: WorkerSettings) -> Framework:
    wt = CATALOGUE[settings.worker_type]
    install = f"install it with: {wt.install_command}"
    try:
        installed = version(wt.module)
    except PackageNotFoundError:
        raise StartupError(f"worker type {wt.name} needs {wt.module} {wt.version_spec}, which "
                           f"is not installed in this environment; {install}") from None
    checked = wt.extra is not None or wt.requirement is not None  # aiq's base: any version
    if checked and installed not in SpecifierSet(wt.version_spec):
        raise StartupError(f"worker type {wt.name} needs {wt.module} {wt.version_spec} but "
                           f"{installed} is installed; {install}")
    try:
        return load_framework(wt.framework)
    except ImportError as exc:  # the plugin's implementation, or what it imports
        raise StartupError(f"worker type {wt.name}: importing {wt.framework} failed ({exc}); "
                           f"{install}") from exc


def check_gpu(settings: WorkerSettings) -> tuple[GpuDevices | None, list[GpuInfo]]:
    """The worker's GPU devices (None: no GPU admission) and their inventory at start. A GPU
    type needs a GPU; any type runs on scripted devices when ``AIQ_GPU_SCRIPT`` names some."""
    wt = CATALOGUE[settings.worker_type]
    if settings.gpu_script is not None:
        try:
            devices: GpuDevices = open_devices(settings.gpu_script)
            return devices, _inventory(devices)
        except GpuUnavailable as exc:
            raise StartupError(f"worker type {wt.name}: {exc}") from None
    if wt.device is not Device.GPU:
        if settings.use_gpu:
            raise StartupError(f"USE_GPU=true but worker type {wt.name} is CPU-only; use a "
                               f"-gpu worker type")
        return None, []
    if not settings.use_gpu:
        raise StartupError(f"worker type {wt.name} is a GPU type: set USE_GPU=true")
    try:
        devices = open_devices(None)
        return devices, _inventory(devices)
    except NvmlMissing:
        raise StartupError(f"worker type {wt.name} needs NVML bindings (nvidia-ml-py); "
                           f"install with: {wt.install_command}") from None
    except GpuUnavailable as exc:
        raise StartupError(f"worker type {wt.name} needs a GPU, but {exc}") from None


def _inventory(devices: GpuDevices) -> list[GpuInfo]:
    return [GpuInfo(index=d.index, name=d.name, total_mb=d.total_mb, free_mb=d.free_mb)
            for d in devices.devices()]


def check_command_dirs(settings: WorkerSettings) -> None:
    """With COMMAND_JOBS on: its directories exist and can be written."""
    if not settings.command_jobs:
        return
    for name in ("command_env_root", "command_work_root"):
        path = getattr(settings, name)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".aiq-probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise StartupError(f"{name.upper()}={path}: cannot write there "
                               f"({exc.strerror or exc})") from None


def check_store(settings: WorkerSettings) -> ArtifactStore:
    """The artifact store ``ARTIFACT_URI`` names, its filesystem installed (no I/O yet: a store
    that cannot be reached fails the jobs that need it, as retryable errors)."""
    try:
        return open_store(settings)
    except StoreError as exc:
        raise StartupError(str(exc)) from None
