"""``python -m consumers`` / ``aiq worker``: one worker process, configured by env vars."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
from pydantic import ValidationError

from consumers.runtime import Worker
from consumers.settings import WorkerSettings
from consumers.startup import StartupError, check_framework, check_gpu
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
    redis = client(settings.url, health_check_interval=10,
                           socket_connect_timeout=5)
    # The blocking XREADGROUP waits up to block_ms: its socket timeout must outlast that.
    read_conn = client(settings.url, max_connections=1,
                               socket_connect_timeout=5,
                               socket_timeout=settings.block_ms / 1000 + 10)
    worker = Worker(settings, framework, redis, read_conn, gpus=gpus, devices=devices)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await read_conn.aclose()
        await redis.aclose()


def main(**overrides: object) -> int:
    try:
        settings = load_settings(**overrides)
        logs.configure(settings.log_level, settings.log_json)
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"aiq worker: {exc}", file=sys.stderr)
        return 2
    structlog.get_logger("aiq.worker").info("exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
