"""One JSON shape for every failure, and the handlers that produce it.

``{"error": {"code": "<stable code>", "message": "<for people>", "details": ...}}``. Codes are
part of the API contract (see ``ERROR_CODES``); messages may change. No response ever carries a
traceback: unexpected exceptions are logged here and answered with ``internal_error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisClusterException, RedisError
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from schemas.catalogue import RoutingError
from streams.errors import (
    UNAVAILABLE,
    AiqError,
    IdempotencyConflict,
    IllegalTransition,
    InvalidParameters,
    JobNotFound,
    NotReplicated,
    QueueFull,
)

log = structlog.get_logger("aiq.gateway")

# Every stable code and its HTTP status: the contract clients program against.
ERROR_CODES: dict[str, int] = {
    "validation_error": 422,
    "routing_error": 422,
    "model_not_found": 422,
    "job_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "illegal_transition": 409,
    "model_not_ready": 409,
    "idempotency_conflict": 409,
    "payload_too_large": 413,
    "unauthorized": 401,
    "command_jobs_disabled": 403,
    "origin_not_allowed": 403,
    "invalid_host": 400,
    "queue_full": 429,
    "redis_unavailable": 503,
    "not_replicated": 503,
    "internal_error": 500,
}
_DOMAIN_STATUS: dict[type[AiqError], int] = {
    InvalidParameters: 422,
    JobNotFound: 404,
    IllegalTransition: 409,  # ModelNotReady is a subclass, code model_not_ready
    IdempotencyConflict: 409,
    QueueFull: 429,
    NotReplicated: 503,
}
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed",
                 413: "payload_too_large", 422: "validation_error"}


class ErrorInfo(BaseModel):
    code: str = Field(description="stable, machine-readable error code")
    message: str = Field(description="human-readable explanation")
    details: Any = Field(default=None, description="e.g. the invalid fields")


class ErrorResponse(BaseModel):
    error: ErrorInfo


class ApiError(HTTPException):
    """An HTTP error with a stable code; the only exception routes raise themselves."""

    def __init__(self, status_code: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, message, headers)
        self.code = code
        self.message = message
        self.details = details


async def refuse(scope: Scope, receive: Receive, send: Send, response: JSONResponse,
                 ws_close: tuple[int, str]) -> None:
    """Answer a request the gateway turns away with ``response``, a WebSocket handshake too:
    the client gets the same status and JSON error as over HTTP (the ASGI denial response,
    which uvicorn supports). A server without it can only close the socket before accepting
    it, with ``ws_close`` (code, reason); it answers the handshake with a bare 403 then."""
    if scope["type"] == "websocket" and \
            "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": ws_close[0], "reason": ws_close[1]})
    else:  # Starlette's response sends websocket.http.response.* for a WebSocket scope
        await response(scope, receive, send)


def error_response(status_code: int, code: str, message: str, details: Any = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(mode="json"), status_code, headers=headers)


def field_path(loc: Any) -> str:
    """``("body", "jobs", 3, "model_type")`` → ``body.jobs[3].model_type``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def field_errors(errors: Any) -> list[dict[str, str]]:
    """Pydantic/FastAPI errors as ``{field, message, type}`` (no echoed input, no ctx)."""
    out = []
    for err in errors:
        field = field_path(err.get("loc", ()))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"field": field, "message": message, "type": str(err.get("type", ""))})
    return out


def _summary(fields: list[dict[str, str]], limit: int = 5) -> str:
    parts = [f"{f['field']}: {f['message']}" if f["field"] else f["message"]
             for f in fields[:limit]]
    more = len(fields) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = field_errors(exc.errors())
    return error_response(422, "validation_error", _summary(fields), fields)


async def _routing(_: Request, exc: Exception) -> JSONResponse:
    fields = [{"field": "body", "message": str(exc), "type": "routing"}]
    return error_response(422, "routing_error", str(exc), fields)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AiqError)
    status = next((s for cls, s in _DOMAIN_STATUS.items() if isinstance(exc, cls)), None)
    if status is None:  # worker-side errors (fencing, stale entries) never belong in a response
        return await _internal(request, exc)
    headers: dict[str, str] | None = None
    details: Any = None
    if status in (429, 503):  # the queue drains as workers finish jobs; replicas catch up
        headers = {"Retry-After": str(request.app.state.settings.retry_after_s)}
    if isinstance(exc, NotReplicated):
        details = {"job_id": exc.job_id, "replicas_acked": exc.acked,
                   "replicas_wanted": exc.wanted}
    if isinstance(exc, InvalidParameters):  # as a request validation error names its fields
        details = [{"field": f"body.{field}", "message": rule, "type": "invalid_parameter"}
                   for field, rule in exc.problems]
    return error_response(status, exc.code, str(exc), details, headers=headers)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)
    if exc.status_code == 400:  # FastAPI could not decode the body (e.g. not UTF-8): as for
        message = "the body is not valid JSON (UTF-8)"  # malformed JSON, a 422 on "body"
        return error_response(422, "validation_error", f"body: {message}", [
            {"field": "body", "message": message, "type": "json_invalid"}])
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    retry_after = str(request.app.state.settings.retry_after_s)
    log.warning("redis unavailable", method=request.method, path=request.url.path,
                error=str(exc), error_type=type(exc).__name__)
    return error_response(503, "redis_unavailable", "Redis is unavailable; retry shortly",
                          headers={"Retry-After": retry_after})


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    """Down, failing over, or full (OOM under noeviction): 503, and the client retries."""
    if isinstance(exc, UNAVAILABLE):
        return await _redis_down(request, exc)
    return await _internal(request, exc)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error", method=request.method, path=request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(RoutingError, _routing)
    app.add_exception_handler(AiqError, _domain)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(RedisClusterException, _redis_error)  # e.g. a slot with no master
    app.add_exception_handler(Exception, _internal)


def responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given error codes (grouped by status)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status = ERROR_CODES[code]
        entry = out.setdefault(status, {"model": ErrorResponse, "description": ""})
        entry["description"] = ", ".join(filter(None, [entry["description"], f"`{code}`"]))
    return out
