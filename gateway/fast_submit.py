"""The submit routes, answered straight from the ASGI call (pure ASGI, no routing pass).

A submit is the request a busy gateway answers most, and on it FastAPI's own layers (route
matching across every router, the request/response wrappers, the dependency pass, the exit
stacks) cost about as much CPU as the submit itself (issue #15, bench/http_submit.py). This
middleware sits innermost, inside the access log, the key and host checks and the body limit,
and hands ``POST`` on a submit path to the very endpoint function the router would have called
(they take the request only, gateway/routes/jobs.py). An exception goes to the handler the app
registered for it (gateway/errors.py), as Starlette's exception middleware would do, so every
answer, error or not, is the one the routed request gets; the routes stay registered for the
OpenAPI and for anything else that names them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Any]  # Starlette's: a Response or an awaitable of one


class FastSubmit:
    def __init__(self, app: ASGIApp, endpoints: Mapping[str, Endpoint],
                 handlers: Mapping[Any, Handler]) -> None:
        self.app = app
        self.endpoints = dict(endpoints)
        self.handlers = handlers  # the app's own dict: handlers added later count too

    def _handler(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            endpoint = self.endpoints.get(path)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)
