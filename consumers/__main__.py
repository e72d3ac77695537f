"""``python -m consumers`` / ``aiq worker``: one worker process, configured by env vars."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

import structlog
from pydantic import ValidationError

from consumers.metrics import MetricsServer, WorkerMetrics, serve_metrics
from consumers.runtime import Worker
from consumers.settings import WorkerSettings
from consumers.startup import (
    StartupError,
    check_command_dirs,
    check_framework,
    check_gpu,
    check_store,
    pin_cpus,
)
from streams import logs
from streams.connection import client


def load_settings(**overrides: object) -> WorkerSettings:
    try:
        return WorkerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        msg = first["msg"].removeprefix("Value error, ")
        where = f"{field.upper()}: " if first["loc"] else ""
        raise StartupError(f"{where}{msg}") from None


async def serve(settings: WorkerSettings) -> None:
    framework = check_framework(settings)
    devices, gpus = check_gpu(settings)
    check_store(settings)
    check_command_dirs(settings)
    redis = client(settings.target, health_check_interval=10, socket_connect_timeout=5)
    # The blocking XREADGROUP waits up to block_ms: its socket timeout must outlast that.
    read_conn = client(settings.target, max_connections=1, socket_connect_timeout=5,
                       socket_timeout=settings.block_ms / 1000 + 10)
    worker = Worker(settings, framework, redis, read_conn, gpus=gpus, devices=devices)
    server = start_metrics(worker.metrics, settings)
    # What start-up made (modules, the framework's own) lives as long as the process: out of
    # the collector's sight, the full collections that the jobs' garbage triggers cost less.
    gc.freeze()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        if server is not None:
            server.close()
        await read_conn.aclose()
        await redis.aclose()


def start_metrics(metrics: WorkerMetrics, settings: WorkerSettings) -> MetricsServer | None:
    """The worker's metrics endpoint when ``METRICS_PORT`` is set; a port that cannot be bound
    stops the worker at start with one line."""
    if not settings.metrics_port:
        return None
    try:
        server = serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise StartupError(f"METRICS_PORT: cannot serve metrics on {settings.metrics_host}:"
                           f"{settings.metrics_port} ({exc.strerror or exc})") from None
    structlog.get_logger("aiq.worker").info("metrics served", host=settings.metrics_host,
                                            port=server.port)
    return server


def event_loop_runner() -> asyncio.Runner:
    """uvloop's event loop where it is installed (uvicorn[standard] brings it): its loop and
    socket transports are C, so a Redis round trip costs the worker's loop thread, which every
    job's start and final write pass through, much less than asyncio's own; asyncio's loop
    otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - every aiq environment has it
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(**overrides: object) -> int:
    try:
        settings = load_settings(**overrides)
        logs.configure(settings.log_level, settings.log_json)
        pin_cpus(settings)  # before any thread starts: each one inherits the CPU set
        with event_loop_runner() as runner:
            runner.run(serve(settings))
    except StartupError as exc:
        print(f"aiq worker: {exc}", file=sys.stderr)
        return 2
    structlog.get_logger("aiq.worker").info("exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
