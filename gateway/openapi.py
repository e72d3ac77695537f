"""OpenAPI that matches the wire: FastAPI's default 422 schema is replaced by ours.

FastAPI documents a ``HTTPValidationError`` body on every route with parameters, but our
handler answers with the ``ErrorResponse`` envelope; the generated spec is rewritten once.
Schemas no route returns as a model, but a route's description points at (the job events an
SSE frame carries), are added to ``components``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from gateway.errors import ErrorResponse
from schemas.events import JobEvent

_REF_TEMPLATE = "#/components/schemas/{model}"
# Named component -> its model: what ``{"$ref": "#/components/schemas/<name>"}`` may point at.
_COMPONENTS: dict[str, TypeAdapter[Any]] = {"JobEvent": TypeAdapter(JobEvent)}

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


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                               description=app.description, routes=app.routes)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault(ErrorResponse.__name__, ErrorResponse.model_json_schema(
                ref_template=_REF_TEMPLATE))
            for name, adapter in _COMPONENTS.items():
                schema = adapter.json_schema(mode="serialization", ref_template=_REF_TEMPLATE)
                for def_name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(def_name, definition)
                schemas.setdefault(name, schema)
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = _rewrite(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
