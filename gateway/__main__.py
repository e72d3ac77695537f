"""``python -m gateway`` / ``aiq gateway``: serve the HTTP API, configured by env vars."""

from __future__ import annotations

import asyncio
import gc
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from gateway.app import create_app
from gateway.settings import GatewaySettings
from streams import logs


class _Server(uvicorn.Server):
    """uvicorn waits for open responses before the app's shutdown runs, and SSE streams never
    end by themselves: on SIGINT/SIGTERM, end every live stream first."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        hub = getattr(self._app.state, "hub", None)
        if hub is not None:
            asyncio.get_event_loop().call_soon_threadsafe(hub.close_clients)
        super().handle_exit(sig, frame)


def freeze_startup_objects() -> None:
    """Move what exists at start (modules, the app, its routes: most of the process's objects)
    out of the cyclic collector's reach. A full collection then walks only what clients
    created; without this, one landing among 1,000 live SSE streams stalled them all for
    ~200 ms (bench/sse_fanout.py)."""
    gc.collect()
    gc.freeze()


def main(**overrides: object) -> int:
    try:
        settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).upper() or "settings"
        print(f"aiq gateway: {field}: {first['msg']}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, json=settings.log_json)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level.lower(), proxy_headers=True,
                            timeout_graceful_shutdown=10, access_log=False, log_config=None)
    freeze_startup_objects()
    _Server(config, app).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
