"""The NVML boundary: what GPUs a worker sees and how much memory is free on each, now.

Nothing else in aiq imports ``pynvml``. Three implementations of one small protocol:

* ``NvmlDevices`` — the real devices, through nvidia-ml-py (imported lazily, so this module
  imports without it);
* ``ScriptedDevices`` — an in-process script a test holds and changes (``set_free``);
* ``ScriptFileDevices`` — a JSON file re-read at every call, so a test can drive worker
  *processes* too: the worker setting ``AIQ_GPU_SCRIPT`` (or ``GPU_SCRIPT``) names it, e.g.::

      {"devices": [{"name": "scripted-0", "total_mb": 16000, "free_mb": 4000}]}

  ``write_script`` rewrites it atomically ("free memory" rose). A device may also give
  ``process_used_mb``: what this process uses on it (NVML's per-process figure).

All sizes are MiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

_MIB = 2**20


class GpuUnavailable(Exception):
    """No usable GPU (no bindings, no driver, no device, unreadable script). One-line message."""


class NvmlMissing(GpuUnavailable):
    """nvidia-ml-py is not installed in this environment."""


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    """One device's memory, read now."""

    index: int
    name: str
    total_mb: int
    free_mb: int
    # Memory this process holds on the device, when the driver tells (None: unknown, e.g. NVML
    # per-process accounting is not visible from inside a container's PID namespace).
    process_used_mb: int | None = None


class GpuDevices(Protocol):
    """The GPUs a worker sees."""

    def devices(self) -> list[DeviceMemory]:
        """Every device with its memory now. Raises GpuUnavailable when they cannot be read."""
        ...

    def close(self) -> None: ...


# -- real devices ------------------------------------------------------------------------------

class NvmlDevices:
    """Devices through NVML (``pip install nvidia-ml-py``; imported here, lazily, only)."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise NvmlMissing("NVML bindings (nvidia-ml-py) are not installed") from None
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as exc:
            raise GpuUnavailable(f"NVML found none ({exc})") from None
        if count == 0:
            pynvml.nvmlShutdown()
            raise GpuUnavailable("none is visible")
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self._names = [_text(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        self._lock = threading.Lock()  # NVML handles are shared by the loop and job threads
        self._pid = os.getpid()

    def devices(self) -> list[DeviceMemory]:
        nvml = self._nvml
        out = []
        with self._lock:
            try:
                for i, handle in enumerate(self._handles):
                    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                    out.append(DeviceMemory(i, self._names[i], int(mem.total) // _MIB,
                                            int(mem.free) // _MIB, self._process_used(handle)))
            except nvml.NVMLError as exc:
                raise GpuUnavailable(f"NVML: {exc}") from None
        return out

    def _process_used(self, handle: Any) -> int | None:
        nvml = self._nvml
        try:
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLError:
            return None
        for proc in procs:
            used = getattr(proc, "usedGpuMemory", None)
            if proc.pid == self._pid and isinstance(used, int):
                return used // _MIB
        return None  # not listed: no memory yet, or our PID is not the one NVML knows

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_gpu_count() -> int:
    """How many GPUs NVML sees (0 without nvidia-ml-py, a driver or a device)."""
    try:
        devices = NvmlDevices()
    except GpuUnavailable:
        return 0
    try:
        return len(devices.devices())
    except GpuUnavailable:
        return 0
    finally:
        devices.close()


# -- scripted devices (tests) ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ScriptedDevice:
    total_mb: int
    free_mb: int
    name: str = "scripted"
    process_used_mb: int | None = None


class ScriptedDevices:
    """Devices whose memory a test sets. Thread-safe; read by the worker at every check."""

    def __init__(self, devices: Sequence[ScriptedDevice]) -> None:
        if not devices:
            raise ValueError("a scripted GPU needs at least one device")
        self._devices = list(devices)
        self._lock = threading.Lock()

    def set_free(self, index: int, free_mb: int) -> None:
        with self._lock:
            self._devices[index] = replace(self._devices[index], free_mb=free_mb)

    def devices(self) -> list[DeviceMemory]:
        with self._lock:
            return [DeviceMemory(i, f"{d.name}-{i}", d.total_mb, d.free_mb, d.process_used_mb)
                    for i, d in enumerate(self._devices)]

    def close(self) -> None:
        return None


class ScriptFileDevices:
    """Devices described by a JSON file, re-read at every call (see the module docstring). A
    file caught mid-rewrite by a non-atomic writer gives the last good reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: list[DeviceMemory] | None = None
        self._last = self.devices()

    def devices(self) -> list[DeviceMemory]:
        try:
            raw = json.loads(self.path.read_text())
            devices = [
                DeviceMemory(i, str(d.get("name", f"scripted-{i}")), int(d["total_mb"]),
                             int(d["free_mb"]), _optional_int(d.get("process_used_mb")))
                for i, d in enumerate(raw["devices"])
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if self._last is not None:
                return self._last
            raise GpuUnavailable(f"GPU script {self.path}: {exc}") from None
        if not devices:
            raise GpuUnavailable(f"GPU script {self.path} lists no device")
        self._last = devices
        return devices

    def close(self) -> None:
        return None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def write_script(path: Path, devices: Sequence[ScriptedDevice]) -> None:
    """Write (atomically) a GPU script file that ``ScriptFileDevices`` reads."""
    body = {"devices": [{"name": d.name, "total_mb": d.total_mb, "free_mb": d.free_mb,
                         **({"process_used_mb": d.process_used_mb}
                            if d.process_used_mb is not None else {})} for d in devices]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh)
    os.replace(tmp, path)


def open_devices(script: Path | None) -> GpuDevices:
    """The scripted devices of ``script`` when given, else the real ones (GpuUnavailable when
    there are none)."""
    if script is not None:
        return ScriptFileDevices(script)
    return NvmlDevices()
