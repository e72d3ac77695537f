"""OpenAPI that matches the wire: FastAPI's default 422 schema is replaced by ours.

FastAPI documents a ``HTTPValidationError`` body on every route with parameters, but our
handler answers with the ``ErrorResponse`` envelope; the generated spec is rewritten once.
An optional query or header parameter (``str | None``) is documented as ``anyOf [..., null]``,
but a header or query string cannot carry a JSON null (a client sending ``null`` sends the text
"null"): absent is how such a parameter is left out, so its null branch is dropped.
Schemas no route returns as a model, but a route's description points at (the job events an
SSE frame carries), are added to ``components``. With ``API_KEY`` set, the spec also declares
the key (security schemes) and the 401 the auth middleware answers on every route it guards.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from gateway.auth import OPEN_PREFIXES, open_paths
from gateway.errors import ErrorResponse
from gateway.settings import GatewaySettings
from schemas.catalogue import STATE
from schemas.commands import CommandRequest
from schemas.events import JobEvent, LogLine
from schemas.requests import InferenceRequest, TrainingBatch, TrainingRequest

_REF_TEMPLATE = "#/components/schemas/{model}"
# Named component -> its model: what ``{"$ref": "#/components/schemas/<name>"}`` may point at.
_COMPONENTS: dict[str, TypeAdapter[Any]] = {"JobEvent": TypeAdapter(JobEvent),
                                             "LogLine": TypeAdapter(LogLine)}
# Bodies that routes parse themselves (gateway/body.py) and name in their ``openapi_extra``.
_REQUEST_BODIES: dict[str, TypeAdapter[Any]] = {
    "TrainingRequest": TypeAdapter(TrainingRequest),
    "InferenceRequest": TypeAdapter(InferenceRequest),
    "TrainingBatch": TypeAdapter(TrainingBatch),
    "CommandRequest": TypeAdapter(CommandRequest)}

_DEFAULT_422 = "#/components/schemas/HTTPValidationError"
_OURS = f"#/components/schemas/{ErrorResponse.__name__}"


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("$ref") == _DEFAULT_422:
            return {"$ref": _OURS}
        return {key: _rewrite(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    return node


# The three ways gateway/auth.py accepts the key; any one of them will do.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
    "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key",
                    "description": "for EventSource and WebSocket, which cannot set headers"},
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response entry with our error envelope."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _OURS}}}}
    if headers:
        response["headers"] = headers
    return response


_NULL = {"type": "null"}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"anyOf": [X, {"type": "null"}], ...}`` -> ``{**X, ...}``."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list) or _NULL not in branches:
        return schema
    rest = [b for b in branches if b != _NULL]
    outer = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**rest[0], **outer} if len(rest) == 1 else {**outer, "anyOf": rest}


def _parameters_not_null(spec: dict[str, Any]) -> None:
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", ()):
                if "schema" in parameter:
                    parameter["schema"] = _not_null(parameter["schema"])


def _document_api_key(spec: dict[str, Any], open_paths: tuple[str, ...]) -> None:
    """Every route the key guards: its security requirement and the 401 it answers without."""
    spec["components"]["securitySchemes"] = SECURITY_SCHEMES
    unauthorized = _error("`unauthorized`: the API key is missing or wrong", {
        "WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                             "description": "`Bearer`"}})
    for path, operations in spec.get("paths", {}).items():
        if path in open_paths or path.startswith(OPEN_PREFIXES):
            continue
        for operation in operations.values():
            operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            operation.setdefault("responses", {})["401"] = unauthorized


def _document_trusted_hosts(spec: dict[str, Any]) -> None:
    """With TRUSTED_HOSTS set, every route answers 400 ``invalid_host`` to another Host."""
    invalid = _error("`invalid_host`: the request's Host is not one of TRUSTED_HOSTS", {})
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            operation.setdefault("responses", {})["400"] = invalid


def _add_components(schemas: dict[str, Any]) -> None:
    schemas.setdefault(ErrorResponse.__name__, ErrorResponse.model_json_schema(
        ref_template=_REF_TEMPLATE))
    named = [(name, adapter, "serialization") for name, adapter in _COMPONENTS.items()]
    named += [(name, adapter, "validation") for name, adapter in _REQUEST_BODIES.items()]
    for name, adapter, mode in named:
        schema = adapter.json_schema(mode=mode, ref_template=_REF_TEMPLATE)  # type: ignore[arg-type]
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(def_name, definition)
        schemas.setdefault(name, schema)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def build_openapi(app: FastAPI, settings: GatewaySettings) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                       description=app.description, routes=app.routes)
    _add_components(spec.setdefault("components", {}).setdefault("schemas", {}))
    _parameters_not_null(spec)
    if settings.api_key is not None:
        _document_api_key(spec, open_paths(settings))
    if settings.hosts:
        _document_trusted_hosts(spec)
    rewritten: dict[str, Any] = _rewrite(spec)
    return rewritten


def install_openapi(app: FastAPI) -> None:
    """The spec is made once per version of the catalogue: a model type the gateway learns
    shows in the next one (its ``examples``, the data-free enum)."""
    made_for = -1

    def openapi() -> dict[str, Any]:
        nonlocal made_for
        if app.openapi_schema is None or made_for != STATE.version:
            made_for = STATE.version
            app.openapi_schema = build_openapi(app, app.state.settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
