"""The ``aiq`` command: a thin layer over schemas, consumers, gateway and :mod:`aiq.up`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from aiq.installed import catalogue_availability
from aiq.submit import submit_app
from aiq.up import DEFAULT_REDIS_URL, UpOptions, run
from aiq.watch import WATCH_HELP, UsageExits3, watch_command
from schemas.catalogue import CATALOGUE, Device

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
) -> None:
    """Run one worker in this process (the other settings come from env vars)."""
    name = worker_type or os.environ.get("WORKER_TYPE")
    known = ", ".join(CATALOGUE)
    if not name:
        _fail(f"aiq worker: give --type or set WORKER_TYPE; known types: {known}", 2)
    wt = CATALOGUE.get(name)
    if wt is None:
        _fail(f"aiq worker: unknown worker type {name!r}; known types: {known}", 2)
    overrides: dict[str, object] = {"worker_type": name}
    if worker_type is not None or "MODEL_FRAMEWORK" not in os.environ:
        overrides["model_framework"] = wt.framework
    if "USE_GPU" not in os.environ:
        overrides["use_gpu"] = wt.device is Device.GPU
    if concurrency is not None:
        overrides["max_concurrent_jobs"] = concurrency
    from consumers.__main__ import main

    raise typer.Exit(main(**overrides))


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
    """List the worker types, whether each can run here, and how to install it."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("type", no_wrap=True)
    for column in ("framework", "installed", "serves", "to install"):
        table.add_column(column, overflow="fold")
    for found in catalogue_availability():
        wt = found.worker_type
        framework = f"{wt.module} {wt.version_spec}" if wt.extra else "(built in)"
        state = f"yes {found.installed_version}" if found.ok else f"no: {found.problem}"
        state = "no" if found.problem == "not installed" else state
        table.add_row(wt.name, framework, state, " ".join(sorted(wt.model_types)),
                      "" if found.ok else found.fix)
    Console().print(table)


@app.command()
def health(
    url: Annotated[str, typer.Option(help="Base URL of the gateway.")] = "http://127.0.0.1:8000",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 2.0,
) -> None:
    """Exit 0 if the gateway's GET /health answers 200, else 1 (for container probes)."""
    target = f"{url.rstrip('/')}/health"
    try:
        response = httpx.get(target, timeout=timeout)
    except httpx.HTTPError as exc:
        _fail(f"unhealthy: {target}: {exc or type(exc).__name__}", 1)
    if response.status_code != 200:
        _fail(f"unhealthy: {target}: HTTP {response.status_code} {response.text[:200]}", 1)
    typer.echo(f"healthy: {target}")


# `aiq submit training|inference` and `aiq watch` live in aiq/submit.py and aiq/watch.py.
app.add_typer(submit_app, name="submit")
app.command("watch", cls=UsageExits3, help=WATCH_HELP)(watch_command)
