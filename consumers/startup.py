"""Start-up checks of a worker process: each failure is one clear line and exit code 2."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet

from consumers.frameworks import load_framework
from consumers.frameworks.base import Framework
from consumers.settings import WorkerSettings
from schemas.catalogue import CATALOGUE, Device
from schemas.workers import GpuInfo


class StartupError(Exception):
    """The worker cannot serve its type here. The message is the one line users read."""


def check_framework(settings: WorkerSettings) -> Framework:
    wt = CATALOGUE[settings.worker_type]
    install = f"install it with: {wt.install_command}"
    try:
        installed = version(wt.module)
    except PackageNotFoundError:
        raise StartupError(f"worker type {wt.name} needs {wt.module} {wt.version_spec}, which "
                           f"is not installed in this environment; {install}") from None
    if wt.extra is not None and installed not in SpecifierSet(wt.version_spec):
        raise StartupError(f"worker type {wt.name} needs {wt.module} {wt.version_spec} but "
                           f"{installed} is installed; {install}")
    try:
        return load_framework(wt.framework)
    except ImportError as exc:
        raise StartupError(f"worker type {wt.name}: importing {wt.framework} failed ({exc}); "
                           f"{install}") from exc


def check_gpu(settings: WorkerSettings) -> list[GpuInfo]:
    wt = CATALOGUE[settings.worker_type]
    if wt.device is not Device.GPU:
        if settings.use_gpu:
            raise StartupError(f"USE_GPU=true but worker type {wt.name} is CPU-only; use a "
                               f"-gpu worker type")
        return []
    if not settings.use_gpu:
        raise StartupError(f"worker type {wt.name} is a GPU type: set USE_GPU=true")
    try:
        import pynvml
    except ImportError:
        raise StartupError(f"worker type {wt.name} needs NVML bindings (nvidia-ml-py); "
                           f"install with: {wt.install_command}") from None
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as exc:
        raise StartupError(f"worker type {wt.name} needs a GPU, but NVML found none ({exc})"
                           ) from None
    if count == 0:
        raise StartupError(f"worker type {wt.name} needs a GPU, but none is visible")
    gpus = []
    for i in range(count):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        name = pynvml.nvmlDeviceGetName(h)
        gpus.append(GpuInfo(index=i, name=str(name), total_mb=mem.total // 2**20,
                            free_mb=mem.free // 2**20))
    return gpus
