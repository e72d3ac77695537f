"""Command jobs (``POST /jobs/command``): a team's own entrypoint, run by a worker as a child
process. The request, its checks (the 422s users read) and its routing. No I/O.

A command job runs arbitrary code as the worker's user: the gateway refuses it unless it has an
API key and the routed worker type is in its ``COMMAND_WORKER_TYPES``, and only workers with
``COMMAND_JOBS`` on read the command stream (docs/SECURITY.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, field_validator

from schemas.catalogue import CATALOGUE, Device, RoutingError
from schemas.requests import _TIMEOUT_DOC, MAX_TIMEOUT_S, JobPriority, MaxRetries, Text
from schemas.status import Priority

MAX_ARGV = 256  # entrypoint items
MAX_ARGV_BYTES = 64 * 1024  # all of them together
MAX_ENV_VARS = 128
MAX_ENV_VALUE = 32 * 1024
MAX_REQUIREMENTS = 200
RESERVED_ENV_PREFIX = "AIQ_"  # the worker's own variables (AIQ_OUTPUT_DIR, AIQ_REPORT_FD, ...)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ARTIFACT_SCHEME = "artifact://"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # as consumers/artifact_store.py
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class CommandsDisabled(RoutingError):
    """Command jobs are off for the worker type the request routes to (or on none): 403."""


def _no_nul(value: str, what: str) -> str:
    if "\0" in value:
        raise ValueError(f"{what} must not contain a NUL character")
    return value


def _check_argv(argv: list[str]) -> list[str]:
    if not argv[0].strip():
        raise ValueError("the program (entrypoint[0]) must not be empty")
    for item in argv:
        _no_nul(item, "an entrypoint item")
    if sum(len(item.encode()) for item in argv) > MAX_ARGV_BYTES:
        raise ValueError(f"the entrypoint is longer than {MAX_ARGV_BYTES} bytes in all")
    return argv


def _check_working_dir(value: str) -> str:
    """A path under the worker's data root (checked there: only the worker knows its root), or
    ``artifact://<id>/<path>.tar.gz|.tgz|.zip`` in the artifact store."""
    _no_nul(value, "working_dir")
    if value.startswith(ARTIFACT_SCHEME):
        model_id, _, name = value.removeprefix(ARTIFACT_SCHEME).partition("/")
        parts = name.split("/")
        if not _MODEL_ID.fullmatch(model_id) or ".." in model_id or not all(
                _SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts):
            raise ValueError("an artifact working_dir is artifact://<id>/<path of the archive>: "
                             "plain names of letters, digits, '.', '_' and '-'")
        if not name.endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"an artifact working_dir names an archive: "
                             f"{', '.join(ARCHIVE_SUFFIXES)}")
        return value
    if _SCHEME.match(value):
        raise ValueError(f"working_dir is a path under the data root or {ARTIFACT_SCHEME}<id>/"
                         "<archive>; other URLs are not fetched")
    if ".." in value.replace("\\", "/").split("/"):
        raise ValueError("working_dir must not contain '..'")
    return value


def _check_requirement(value: str) -> str:
    _no_nul(value, "a requirement")
    if not value.strip() or value.lstrip().startswith("-") or any(c in value for c in "\r\n"):
        raise ValueError(f"{value[:60]!r} is not a requirement (one per item, no options: "
                         "a name with its version range, a URL, or a path)")
    return value


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"{name[:60]!r} is not an environment variable name "
                             "(letters, digits and '_', not starting with a digit)")
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            raise ValueError(f"{name} is set by the worker (names starting with "
                             f"{RESERVED_ENV_PREFIX} are reserved)")
        _no_nul(value, f"the value of {name}")
    return env


Argv = Annotated[list[Annotated[str, Field(max_length=8192)]],
                 Field(min_length=1, max_length=MAX_ARGV), AfterValidator(_check_argv)]
Requirement = Annotated[str, Field(min_length=1, max_length=500),
                        AfterValidator(_check_requirement)]
EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE)]


class CommandRequest(BaseModel):
    """A team's own program, run by a worker of a command-enabled type."""

    model_config = ConfigDict(extra="forbid")

    entrypoint: Argv = Field(description="the program and its arguments (argv; no shell: "
                             "wrap in [\"sh\", \"-c\", ...] to get one)",
                             examples=[["python", "train.py", "--epochs", "3"]])
    working_dir: Text | None = Field(
        default=None, min_length=1, max_length=1024, description="where it runs: a directory "
        "under the worker's DATA_ROOT (relative, or absolute inside it), or "
        "artifact://<id>/<path>.tar.gz|.tgz|.zip, an archive in the artifact store unpacked for "
        "the job; default: an empty directory of its own")
    requirements: list[Requirement] | None = Field(
        default=None, min_length=1, max_length=MAX_REQUIREMENTS, description="a uv environment "
        "of these requirements (PEP 508 strings, URLs or paths relative to the working "
        "directory); without it, a pyproject.toml + uv.lock in the working directory makes one; "
        "else the worker's own Python runs it")
    env: dict[Annotated[str, Field(max_length=128)], EnvValue] = Field(
        default_factory=dict, max_length=MAX_ENV_VARS, description="environment variables; "
        "names starting with AIQ_ are the worker's")
    gpu_memory_mb: int | None = Field(default=None, gt=0, le=16_777_216,
                                      description="GPU memory it needs (MiB): GPU admission "
                                      "starts it only where this fits")
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S,
                                    description=_TIMEOUT_DOC)
    max_retries: MaxRetries = None
    priority: JobPriority = Priority.NORMAL
    description: Text = Field(default="", max_length=2000)
    requires_gpu: StrictBool = False
    framework_override: str | None = Field(default=None, max_length=64,
                                           description="a worker type to force")

    _env = field_validator("env")(_check_env)
    _working_dir = field_validator("working_dir")(
        lambda value: None if value is None else _check_working_dir(value))


def route_command(enabled: Sequence[str], requires_gpu: bool = False,
                  framework_override: str | None = None) -> str:
    """The worker type a command job goes to: ``framework_override``, else the first type of
    ``enabled`` (the gateway's COMMAND_WORKER_TYPES, in order) that the catalogue knows and
    whose device matches (a CPU type unless ``requires_gpu``; any type when no CPU type is
    enabled). ``RoutingError`` for a request no type can serve, ``CommandsDisabled`` when
    command jobs are off for the type."""
    listed = ", ".join(enabled) or "none"
    if framework_override is not None:
        wt = CATALOGUE.get(framework_override)
        if wt is None:
            raise RoutingError(f"unknown worker type {framework_override!r}; known: "
                               f"{', '.join(sorted(CATALOGUE))}")
        if requires_gpu and wt.device is not Device.GPU:
            raise RoutingError(f"requires_gpu is true but worker type {wt.name!r} is CPU-only")
        if wt.name not in enabled:
            raise CommandsDisabled(f"command jobs are not enabled for worker type {wt.name!r} "
                                   f"(COMMAND_WORKER_TYPES: {listed})")
        return wt.name
    known = [n for n in enabled if n in CATALOGUE]  # a plugin's type once announced
    want = Device.GPU if requires_gpu else Device.CPU
    matching = [n for n in known if CATALOGUE[n].device is want]
    if matching:
        return matching[0]
    if requires_gpu or not known:
        what = "a GPU worker type" if requires_gpu else "any known worker type"
        raise CommandsDisabled(f"command jobs are not enabled for {what} "
                               f"(COMMAND_WORKER_TYPES: {listed})")
    return known[0]
