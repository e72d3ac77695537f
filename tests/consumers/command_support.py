"""Helpers of the command-job tests: worker settings with command jobs on, submitting, and the
process table (psutil) to prove that nothing a command started is left behind."""

from __future__ import annotations

import secrets
import sys
import zipfile
from pathlib import Path
from typing import Any

import psutil

from consumers.settings import WorkerSettings
from schemas.commands import CommandRequest
from schemas.records import JobSubmitted
from streams.producer import Producer
from tests.support import settings_for

WORKER_TYPE = "diagnostic"


def command_settings(redis_url: str, tmp: Path, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "command_jobs": True, "command_env_root": tmp / "envs", "command_work_root": tmp / "work",
        "command_kill_grace_s": 1.0, "cancel_check_s": 0.2, "log_flush_s": 0.02, **overrides}
    return settings_for(redis_url, tmp, **values)


async def submit(producer: Producer, entrypoint: list[str], **fields: Any) -> JobSubmitted:
    return await producer.submit_command(CommandRequest(entrypoint=entrypoint, **fields),
                                         WORKER_TYPE)


def python(code: str) -> list[str]:
    """The worker's own Python running ``code``."""
    return [sys.executable, "-c", code]


def marker() -> str:
    """A number no other process has on its command line: ``sleep <marker>`` is findable."""
    return f"1000.{secrets.randbelow(10**6):06d}"


def processes_with(token: str) -> list[psutil.Process]:
    """Live processes whose command line holds ``token`` (zombies do not count)."""
    out = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and \
                    token in " ".join(proc.info["cmdline"] or ()):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def local_wheel(directory: Path, name: str = "aiqtestpkg", version: str = "0.1",
                body: str = "VALUE = 42\n") -> Path:
    """A pure-Python wheel made by hand (no build backend, no network): uv installs it
    offline."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": body,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: aiq-tests\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
        zf.writestr(f"{info}/RECORD", record)
    return path
