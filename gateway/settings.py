"""Gateway settings: read once from the environment at the entry point and passed down."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.limits import StreamLimits

MIB = 1024 * 1024


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    redis_url: str | None = Field(default=None, description="overrides REDIS_HOST/REDIS_PORT")
    redis_host: str = "localhost"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_prefix: str = Field(default="ai", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
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

    job_retention_s: int = Field(default=7 * 24 * 3600, ge=1)
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=1)
    job_events_maxlen: int = Field(default=1000, ge=10)
    type_events_maxlen: int = Field(default=10_000, ge=100)
    dead_letter_maxlen: int = Field(default=10_000, ge=10)

    @property
    def url(self) -> str:
        return self.redis_url or f"redis://{self.redis_host}:{self.redis_port}/0"

    @property
    def limits(self) -> StreamLimits:
        return StreamLimits(
            job_events_maxlen=self.job_events_maxlen,
            type_events_maxlen=self.type_events_maxlen,
            dead_maxlen=self.dead_letter_maxlen,
            retention_s=self.job_retention_s,
            idempotency_ttl_s=self.idempotency_ttl_s,
        )
