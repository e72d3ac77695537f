"""Optional API-key auth, the same for HTTP, SSE and WebSocket.

With ``API_KEY`` set, every request except the health probe, the dashboard's static page,
the API docs (``/docs``, ``/redoc``, ``/openapi.json``) and, with ``METRICS_PUBLIC``,
``/metrics`` must carry the key: ``Authorization: Bearer <key>``, ``X-API-Key: <key>``, or
``?api_key=<key>`` (browsers cannot set headers on EventSource and WebSocket). A request
without it gets 401 JSON, a WebSocket handshake too (``errors.refuse``).
"""

from __future__ import annotations

import hmac
import logging
import re
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import error_response, refuse
from gateway.settings import GatewaySettings

# The API's description is not data: /docs must be able to load the spec without the key.
OPEN_PATHS = ("/health", "/", "/dashboard", "/favicon.ico", "/docs", "/docs/oauth2-redirect",
              "/redoc", "/openapi.json")
OPEN_PREFIXES = ("/static/",)
METRICS_PATH = "/metrics"


def open_paths(settings: GatewaySettings) -> tuple[str, ...]:
    """The paths served without the key: ``/metrics`` too with ``METRICS_PUBLIC`` (for a
    Prometheus that scrapes without credentials; it shows counts, never a job or a key)."""
    return OPEN_PATHS + ((METRICS_PATH,) if settings.metrics_public else ())


def _presented(scope: Scope) -> str | None:
    headers: dict[bytes, bytes] = dict(scope.get("headers", ()))
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].decode("latin-1")
    query: bytes = scope.get("query_string", b"")
    values = parse_qs(query.decode("latin-1")).get("api_key")
    return values[0] if values else None


_KEY_IN_QUERY = re.compile(r"(?i)([?&]api_key=)[^&\s\"]*")


def redact(text: str) -> str:
    """``text`` with the value of every ``api_key=`` query parameter replaced by ``***``."""
    return _KEY_IN_QUERY.sub(r"\1***", text)


class RedactKey(logging.Filter):
    """Keeps the API key out of log lines: uvicorn's access log writes every request's path
    with its query string, where browsers must send the key (EventSource, WebSocket)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_access_log() -> None:
    """Install ``RedactKey`` on uvicorn's access and error loggers (once)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKey) for f in logger.filters):
            logger.addFilter(RedactKey())


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, api_key: str, open_paths: tuple[str, ...] = OPEN_PATHS
                 ) -> None:
        self.app = app
        self.key = api_key.encode()
        self.open_paths = open_paths

    def _allowed(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in self.open_paths or path.startswith(OPEN_PREFIXES):
            return True
        given = _presented(scope)
        return given is not None and hmac.compare_digest(given.encode(), self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
        else:
            await refuse(scope, receive, send, error_response(
                401, "unauthorized", "missing or wrong API key: send Authorization: Bearer "
                "<key>, X-API-Key or ?api_key=", headers={"WWW-Authenticate": "Bearer"}),
                (4401, "api key required"))
