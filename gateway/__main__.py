"""``python -m gateway`` / ``aiq gateway``: serve the HTTP API, configured by env vars."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from gateway.app import create_app
from gateway.settings import GatewaySettings


def main(**overrides: object) -> int:
    try:
        settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).upper() or "settings"
        print(f"aiq gateway: {field}: {first['msg']}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), proxy_headers=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
