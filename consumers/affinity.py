"""WORKER_CPUS: the CPUs a worker process, and every thread it starts, may run on.

Job code runs in the worker's job threads, and only one of them runs Python at a time (the GIL):
each blocking call hands the lock to another thread. When those threads may run on every CPU,
a hand-off wakes a thread on another CPU (an inter-processor interrupt, a VM exit under a
hypervisor) while the thread that let go takes the lock back; on one CPU the woken thread just
waits its turn. Short I/O-bound jobs spend most of their time in such hand-offs, so a worker
confined to one CPU runs them faster (bench/RESULTS.md). Native thread pools a job starts
(torch, OpenMP, BLAS) inherit the set too, so frameworks that compute in parallel want several
CPUs here, or none (the default: inherit the process's own set).
"""

from __future__ import annotations

import os
import re

_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")
MAX_CPU = 4095


def parse_cpus(text: str) -> frozenset[int]:
    """A CPU list as taskset and cgroups' cpuset write it: ``0``, ``0-3``, ``0,2,4-5``."""
    cpus: set[int] = set()
    for item in text.replace(" ", "").split(","):
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"{text!r} is not a CPU list (e.g. 0, 0-3 or 0,2,4-5)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first or last > MAX_CPU:
            raise ValueError(f"{text!r}: the range {item} is empty or past CPU {MAX_CPU}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def available_cpus() -> frozenset[int] | None:
    """The CPUs this process may run on (None where the OS does not say: not Linux)."""
    getter = getattr(os, "sched_getaffinity", None)
    return frozenset(getter(0)) if getter is not None else None


def pin(cpus: frozenset[int]) -> None:
    """Confine the calling thread, and so every thread it starts afterwards, to ``cpus``.
    Called before the worker starts any thread. Raises ValueError naming what is wrong."""
    allowed = available_cpus()
    if allowed is None:
        raise ValueError("setting CPU affinity needs Linux (os.sched_setaffinity)")
    missing = sorted(cpus - allowed)
    if missing:
        raise ValueError(f"CPU {', '.join(map(str, missing))} is not available to this process "
                         f"(available: {format_cpus(allowed)})")
    os.sched_setaffinity(0, cpus)


def format_cpus(cpus: frozenset[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``0-2,5``."""
    out: list[str] = []
    for cpu in sorted(cpus):
        if out and cpu == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)
