"""Pure-ASGI body size limit: 413 before a large body is buffered or parsed.

A declared ``Content-Length`` over the limit is refused without reading anything; a chunked or
lying body is counted as it streams in and refused as soon as it passes the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ApiError, error_response, refuse


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large",
                         f"request body exceeds the limit of {limit} bytes",
                         {"max_body_bytes": limit})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except PayloadTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = PayloadTooLarge(self.max_bytes)
        response = error_response(413, exc.code, exc.message, exc.details,
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


class TrustedHosts:
    """Answers only requests whose ``Host`` is one the operator named (TRUSTED_HOSTS; a
    ``*.example.com`` entry covers its subdomains): a page on another site that points a DNS
    name of its own at the gateway (DNS rebinding) gets 400 ``invalid_host``, not the API."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.exact = {h for h in hosts if not h.startswith("*.")}
        self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))

    def allowed(self, scope: Scope) -> bool:
        headers: dict[bytes, bytes] = dict(scope.get("headers", ()))
        host = headers.get(b"host", b"").decode("latin-1").lower()
        name = host if host.endswith("]") else host.rsplit(":", 1)[0]  # the port goes
        return name in self.exact or name.endswith(self.suffixes)  # endswith(()) is False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed(scope):
            await self.app(scope, receive, send)
        else:
            await refuse(scope, receive, send, error_response(
                400, "invalid_host", "this gateway does not answer for that Host (TRUSTED_HOSTS)"),
                (4400, "invalid host"))
