"""JSON request bodies of the submit routes, parsed without FastAPI's generic body path.

FastAPI decodes a body with the standard library, validates the objects and walks its
dependency machinery; on the submit path that was a fifth of the gateway's CPU per request
(issue #15). Here pydantic validates the raw JSON in one pass; only a body its reader refuses
goes through ``json.loads`` as before, which keeps the answers exact for what a job cannot hold
(NaN, integers past 64 bits, lone surrogates): the models' own checks name the field. Errors are
FastAPI's ``RequestValidationError`` with ``loc`` starting at ``body``, so the one handler in
gateway/errors.py answers them as for every other route. The same goes for the
``Idempotency-Key`` header; ``submit_spec`` documents both in the OpenAPI as FastAPI would have.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from schemas.requests import IDEMPOTENCY_KEY_PATTERN

M = TypeVar("M", bound=BaseModel)
IDEMPOTENCY_KEY_DOC = ("retrying a submit with the same key returns the first job (200, "
                       "`duplicate: true`) instead of creating another; keys live "
                       "IDEMPOTENCY_TTL_S seconds; 1-200 visible ASCII characters")
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def _refused(kind: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body",), "msg": message}])


def _check_present(raw: bytes, content_type: str | None) -> None:
    if not raw:
        raise _refused("missing", "Field required")
    if content_type is None or not _is_json(content_type):
        raise _refused("model_attributes_type",
                       f"{_NOT_AN_OBJECT} (send JSON with Content-Type: application/json)")


def _body_errors(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**err, "loc": ("body", *err["loc"])}
                                   for err in exc.errors(include_url=False, include_input=False)])


def decode(raw: bytes, content_type: str | None) -> Any:
    """The body's JSON value (the standard library's reading); RequestValidationError when
    there is none or it is not JSON."""
    _check_present(raw, content_type)
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise _refused("json_invalid", "the body is not valid JSON (UTF-8)") from None
    except ValueError as exc:
        raise _refused("json_invalid", f"JSON decode error: {exc}") from None


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _body_errors(exc) from None


def read(model: type[M], raw: bytes, content_type: str | None) -> M:
    """``raw`` as ``model``, or the 422 FastAPI would answer. Pydantic reads the JSON itself
    (one pass, in Rust); a body it refuses as JSON (a lone surrogate, say) is read again by the
    standard library, so the model's own checks name the field, as they did behind FastAPI."""
    _check_present(raw, content_type)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if not any(err["type"] == "json_invalid" for err in exc.errors()):
            raise _body_errors(exc) from None
    return validate(model, decode(raw, content_type))


async def parse(request: Request, model: type[M]) -> M:
    """The request's body as ``model``, or the 422 FastAPI would answer."""
    return read(model, await request.body(), request.headers.get("content-type"))


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` header, None when absent; a 422 naming the header when
    it is not 1-200 visible ASCII characters (safe in a Redis key, in logs and in headers)."""
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if _IDEMPOTENCY_KEY.fullmatch(raw) is None:
        message = ("should be 1-200 visible ASCII characters (no spaces)" if len(raw) <= 200
                   else "should have at most 200 characters")
        raise RequestValidationError([{"type": "string_pattern_mismatch",
                                       "loc": ("header", "Idempotency-Key"), "msg": message}])
    return raw


def body_spec(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads its body with ``parse``: documented as FastAPI
    would have done it (the model's schema is added to the components by gateway/openapi.py)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": ref}}}}


def submit_spec(model: type[BaseModel]) -> dict[str, Any]:
    """``body_spec``, and the ``Idempotency-Key`` header ``idempotency_key`` reads."""
    return {
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "description": IDEMPOTENCY_KEY_DOC,
                        "schema": {"type": "string", "maxLength": 200,
                                   "pattern": IDEMPOTENCY_KEY_PATTERN,
                                   "title": "Idempotency-Key"}}],
        **body_spec(model),
    }
