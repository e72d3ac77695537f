"""The ``aiq`` command: a thin layer over schemas, consumers, gateway and :mod:`aiq.up`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from aiq.envs import (
    EnvError,
    ensure_current,
    env_dir,
    has_own_env,
    install,
    install_command,
    is_current,
    sync_command,
)
from aiq.installed import Availability, availability, catalogue_availability, visible_gpus
from aiq.logs import LOGS_HELP, logs_command
from aiq.submit import submit_app
from aiq.up import DEFAULT_REDIS_URL, UpOptions, run
from aiq.watch import WATCH_HELP, UsageExits3, watch_command
from schemas.catalogue import CATALOGUE, STATE, Device

app = typer.Typer(
    name="aiq",
    help="aiq: an AI job queue on Redis Streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address the gateway binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8000,
    redis_url: Annotated[str, typer.Option(
        envvar="REDIS_URL", help="Redis to use; a local one is started if none answers.")
    ] = DEFAULT_REDIS_URL,
    data_dir: Annotated[Path, typer.Option(
        help="Redis AOF, datasets (data/) and trained models (artifacts/) live here.")
    ] = Path(".aiq"),
    types: Annotated[str | None, typer.Option(
        help="Comma-separated worker types (default: every type installed here).")
    ] = None,
) -> None:
    """Run Redis (if none is reachable), the gateway and one worker per installed type."""
    selected = [t.strip() for t in types.split(",") if t.strip()] if types else None
    options = UpOptions(host=host, port=port, redis_url=redis_url, data_dir=data_dir,
                        types=selected)
    raise typer.Exit(run(options))


@app.command()
def worker(
    worker_type: Annotated[str | None, typer.Option(
        "--type", "-t", help="Worker type (default: $WORKER_TYPE), see `aiq types`.")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Jobs run at once (default: $MAX_CONCURRENT_JOBS or 2).")
    ] = None,
    cpus: Annotated[str | None, typer.Option(
        help="CPUs the worker runs on, e.g. 0 or 0-3 (default: $WORKER_CPUS, else all). One "
             "CPU runs many short I/O-bound jobs faster; see docs/WORKER_MANAGEMENT.md.")
    ] = None,
) -> None:
    """Run one worker in this process (the other settings come from env vars)."""
    name = worker_type or os.environ.get("WORKER_TYPE")
    known = ", ".join(CATALOGUE)
    if not name:
        _fail(f"aiq worker: give --type or set WORKER_TYPE; known types: {known}", 2)
    wt = CATALOGUE.get(name)
    if wt is None:
        broken = "".join(f"; {problem}" for problem in STATE.problems)
        _fail(f"aiq worker: unknown worker type {name!r}; known types: {known} (a framework "
              f"plugin's type needs its package installed here: uv pip install <plugin>)"
              f"{broken}", 2)
    overrides: dict[str, object] = {"worker_type": name}
    if worker_type is not None or "MODEL_FRAMEWORK" not in os.environ:
        overrides["model_framework"] = wt.framework
    if "USE_GPU" not in os.environ:
        overrides["use_gpu"] = wt.device is Device.GPU
    if concurrency is not None:
        overrides["max_concurrent_jobs"] = concurrency
    if cpus is not None:
        overrides["worker_cpus"] = cpus
    found = availability(wt)
    if found.python is None and has_own_env(wt):
        _fail(f"aiq worker: worker type {name} needs {wt.module} {wt.version_spec}, which is not "
              f"installed here; install its environment with: {install_command(wt)}", 2)
    if found.env is not None and found.python is not None:
        _exec_worker(found, overrides)
    from consumers.__main__ import main

    raise typer.Exit(main(**overrides))


def _exec_worker(found: Availability, overrides: dict[str, object]) -> NoReturn:
    """Become ``<env>/bin/python -m consumers``: the worker runs in the type's own environment
    (same pid, so signals and supervisors reach it), configured by env vars as usual."""
    assert found.python is not None and found.env is not None
    extra = found.worker_type.extra
    if extra is not None and not is_current(extra):
        typer.echo(f"aiq worker: updating {_shown(found.env)} (uv.lock changed)", err=True)
        try:
            result = ensure_current(extra, lambda line: None)
        except EnvError as exc:
            _fail(f"aiq worker: {exc}", 1)
        if result is not None and not result.ok:
            _fail(f"aiq worker: {result.problem}", 1)
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    for key, value in overrides.items():
        env[key.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    wt = found.worker_type
    typer.echo(f"aiq worker: {wt.name} runs in {_shown(found.env)} ({wt.module} "
               f"{found.installed_version})", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(found.python, [str(found.python), "-m", "consumers"], env)


@app.command("gateway")
def gateway_command(
    host: Annotated[str | None, typer.Option(help="Bind address (default: $HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: $PORT).")] = None,
) -> None:
    """Run the HTTP gateway in this process (settings from REDIS_URL, HOST, PORT, ...)."""
    try:  # imported late: the other commands work even if the gateway cannot load
        from gateway.__main__ import main
    except ImportError as exc:
        _fail(f"aiq gateway: cannot load the gateway: {exc}", 1)
    overrides = {name: value for name, value in (("host", host), ("port", port))
                 if value is not None}
    raise typer.Exit(main(**overrides))


@app.command()
def types() -> None:
    """List the worker types, whether each can run here, how to install it, and the framework
    plugin (its distribution and version) that declares it."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("type", no_wrap=True)
    for column in ("framework", "installed", "serves", "to install", "plugin"):
        table.add_column(column, overflow="fold")
    for found in catalogue_availability():
        wt = found.worker_type
        own = wt.extra is not None or wt.requirement is not None
        framework = f"{wt.module} {wt.version_spec}" if own else "(built in)"
        state = f"yes {found.installed_version}" if found.ok else f"no: {found.problem}"
        state = "no" if found.problem == "not installed" else state
        table.add_row(wt.name, framework, state, " ".join(sorted(wt.model_types)),
                      "" if found.ok else found.fix, wt.source)
    Console().print(table)
    for problem in STATE.problems:
        typer.echo(f"aiq types: {problem}", err=True)


env_app = typer.Typer(
    help="Per-type environments: torch 2.0, torch 2.1 and tensorflow conflict, so each of "
    "their worker types runs from its own .venvs/<extra>.",
    no_args_is_help=True,
)


def _env_targets(names: list[str], every: bool) -> list[str]:
    """The extras to install for ``names`` (or ``--all``), in catalogue order, deduplicated."""
    if every == bool(names):
        _fail("aiq env install: name worker types, or give --all (not both)", 2)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        _fail(f"aiq env install: unknown worker type {', '.join(unknown)}; known types: "
              f"{', '.join(CATALOGUE)}", 2)
    chosen = [CATALOGUE[n] for n in names] if names else list(CATALOGUE.values())
    extras: list[str] = []
    for wt in chosen:
        if not has_own_env(wt):
            found = availability(wt)
            state = f"{wt.module} {found.installed_version}" if found.ok else (
                f"install it with: {found.fix}")
            typer.echo(f"aiq env: {wt.name} runs in the main environment ({state})")
        elif every and wt.device is Device.GPU and visible_gpus() == 0:
            typer.echo(f"aiq env: skipping {wt.name} (no GPU visible; `aiq env install "
                       f"{wt.name}` makes its environment anyway)")
        elif wt.extra not in extras:
            assert wt.extra is not None
            extras.append(wt.extra)
    return extras


@env_app.command("install")
def env_install(
    worker_types: Annotated[list[str] | None, typer.Argument(
        help="Worker types whose environments to create or update.", show_default=False)
    ] = None,
    every: Annotated[bool, typer.Option(
        "--all", help="Every type with its own environment (GPU types only with a GPU).")
    ] = False,
) -> None:
    """Create or update .venvs/<extra> for each type from uv.lock (uv sync --locked; quick
    when it is up to date)."""
    for extra in _env_targets(worker_types or [], every):
        typer.echo(f"aiq env: {sync_command(extra)}")
        try:
            result = install(extra, typer.echo)
        except EnvError as exc:
            _fail(f"aiq env install: {exc}", 1)
        if not result.ok:
            _fail(f"aiq env install: {result.problem}", 1)
        typer.echo(f"aiq env: {_shown(env_dir(extra))} ready in {result.seconds:.1f}s")
    _env_table(only=worker_types or None)


def _env_table(only: list[str] | None = None) -> None:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("type", "environment", "framework", "status"):
        table.add_column(column, overflow="fold", no_wrap=column == "type")
    for found in catalogue_availability():
        wt = found.worker_type
        if only is not None and wt.name not in only:
            continue
        if found.env is not None:
            place = _shown(found.env)
        elif wt.extra is None or found.python is not None or not has_own_env(wt):
            place = f"this environment ({_shown(Path(sys.prefix))})"  # main, or one with it
        else:
            place = _shown(env_dir(wt.extra))
        version = f"{wt.module} {found.installed_version}" if found.installed_version else "-"
        status = "ready" if found.ok else f"{found.problem}: {found.fix}"
        table.add_row(wt.name, place, version, status)
    Console().print(table)


def _shown(path: Path) -> str:
    """A path as a person types it from here: relative to the current directory when inside."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@env_app.command("list")
def env_list() -> None:
    """Each worker type's environment, the framework version installed there (read from its
    metadata, without importing it), and the command that installs what is missing."""
    _env_table()


@app.command()
def health(
    url: Annotated[str, typer.Option(help="Base URL of the gateway.")] = "http://127.0.0.1:8000",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 2.0,
    worker: Annotated[bool, typer.Option(
        "--worker", help="Check this host's worker instead of the gateway: healthy when a "
        "worker of the type registered from this host, with a live process here, still "
        "heartbeats (Redis from REDIS_URL or REDIS_HOST/REDIS_PORT).")] = False,
    worker_type: Annotated[str | None, typer.Option(
        "--type", "-t", help="With --worker: the worker type (default: $WORKER_TYPE).")
    ] = None,
    redis_down_ok: Annotated[bool, typer.Option(
        "--redis-down-ok", help="With --worker: exit 0 when Redis cannot be reached (the "
        "worker is not to blame; for liveness probes, so an outage restarts no worker).")
    ] = False,
) -> None:
    """Exit 0 if the gateway's GET /health answers 200 (or, with --worker, if this host's
    worker is alive), else 1: for container probes."""
    if worker:
        _worker_health(worker_type or os.environ.get("WORKER_TYPE"), timeout, redis_down_ok)
        return
    target = f"{url.rstrip('/')}/health"
    try:
        response = httpx.get(target, timeout=timeout)
    except httpx.HTTPError as exc:
        _fail(f"unhealthy: {target}: {exc or type(exc).__name__}", 1)
    if response.status_code != 200:
        _fail(f"unhealthy: {target}: HTTP {response.status_code} {response.text[:200]}", 1)
    typer.echo(f"healthy: {target}")


def _worker_health(name: str | None, timeout: float, redis_down_ok: bool) -> None:
    import asyncio

    from pydantic import ValidationError

    from aiq.health import worker_health
    from streams.errors import UNAVAILABLE
    from streams.settings import RedisSettings

    if not name or name not in CATALOGUE:
        given = f"unknown worker type {name!r}" if name else "give --type or set WORKER_TYPE"
        _fail(f"aiq health: {given}; known types: {', '.join(CATALOGUE)}", 2)
    try:
        settings = RedisSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"aiq health: {'.'.join(map(str, first['loc'])).upper()}: {first['msg']}", 2)
    try:
        found = asyncio.run(worker_health(settings, name, timeout))
    except UNAVAILABLE as exc:
        why = f"redis unreachable: {exc or type(exc).__name__}"
        if not redis_down_ok:
            _fail(f"unhealthy: {why}", 1)
        typer.echo(f"unknown: {why} (counted healthy: --redis-down-ok)")
        return
    if not found.healthy:
        _fail(f"unhealthy: {found.message}", 1)
    typer.echo(f"healthy: {found.message}")


# `aiq submit training|inference` and `aiq watch` live in aiq/submit.py and aiq/watch.py.
app.add_typer(submit_app, name="submit")
app.add_typer(env_app, name="env")
app.command("watch", cls=UsageExits3, help=WATCH_HELP)(watch_command)
app.command("logs", cls=UsageExits3, help=LOGS_HELP)(logs_command)
