"""One structured log line per HTTP request, in the gateway's own log style (structlog: JSON
with ``LOG_JSON``), instead of uvicorn's plain access log.

The line comes when the response ends (for an SSE stream: when the stream closes) with the
method, the path, the query with any ``api_key`` value replaced by ``***``, the status, the
duration and the job id the path names. Probes and scrapes (``QUIET_PATHS``: ``/health``,
``/metrics``, the dashboard's page and assets) are logged at debug level, so a load balancer's
health checks or Prometheus' scrapes do not fill the log at the default level.
"""

from __future__ import annotations

import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import redact

QUIET_PATHS = ("/health", "/metrics", "/dashboard", "/static/", "/favicon.ico")
_JOB_ID = re.compile(r"^/jobs/(job_[0-9a-f-]{36})(?:/|$)")

log = structlog.get_logger("gateway.access")


def quiet(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in QUIET_PATHS)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raised before answering

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            self._line(scope, status, time.perf_counter() - started)

    @staticmethod
    def _line(scope: Scope, status: int, seconds: float) -> None:
        path: str = scope.get("path", "")
        fields: dict[str, object] = {
            "method": scope.get("method"), "path": path, "status": status,
            "duration_ms": round(seconds * 1000, 2)}
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            fields["query"] = redact("?" + query)[1:]
        if (match := _JOB_ID.match(path)) is not None:
            fields["job_id"] = match.group(1)
        client = scope.get("client")
        if client:
            fields["client"] = f"{client[0]}:{client[1]}"
        if quiet(path) and status < 400:
            log.debug("request", **fields)
        else:
            log.info("request", **fields)
