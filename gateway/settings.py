"""Gateway settings: read once from the environment at the entry point and passed down."""

from __future__ import annotations

from pydantic import Field

from streams.settings import RedisSettings

MIB = 1024 * 1024


class GatewaySettings(RedisSettings):
    redis_connect_timeout_s: float = Field(default=1.0, gt=0, description="a down Redis "
                                           "answers 503 after at most this long")
    redis_socket_timeout_s: float = Field(default=5.0, gt=0)
    redis_max_connections: int = Field(default=100, ge=1)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=MIB, ge=1024, description="larger request bodies get "
                                "413 before they are parsed")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After of a 503")
    log_level: str = "info"
