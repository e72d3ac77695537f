"""Settings every aiq process shares: where Redis is and the bounds that keep it flat.

A base class only: each process (gateway, worker) subclasses it, reads it once at its entry
point and passes it down; no module imports a global settings object.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.connection import RedisTarget, parse_target
from streams.limits import StreamLimits


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    redis_url: str | None = Field(default=None, description="overrides REDIS_HOST/REDIS_PORT; "
                                  "redis://, rediss://, redis+sentinel://, redis+cluster://")
    redis_cluster: bool = Field(default=False, description="REDIS_URL names a node of a Redis "
                                "Cluster (the same as a redis+cluster:// URL)")
    redis_sentinels: str | None = Field(default=None, description="host:port,host:port of the "
                                        "sentinels: REDIS_URL's credentials and db are the "
                                        "master's (the same as a redis+sentinel:// URL)")
    redis_sentinel_service: str = Field(default="mymaster", min_length=1)
    redis_sentinel_password: SecretStr | None = None
    redis_host: str = "localhost"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_prefix: str = Field(default="ai", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    result_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1,
        validation_alias=AliasChoices("result_ttl_s", "job_retention_s"),
        description="a finished job's record (status, result, error) expires after this; "
                    "JOB_RETENTION_S is its deprecated alias (RESULT_TTL_S wins when both are set)")
    events_ttl_s: int = Field(default=3600, ge=1, description="a finished job's events stream "
                              "expires after this (at most RESULT_TTL_S); after it, a replay "
                              "rebuilds the queued and final events from the record")
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=1)
    job_events_maxlen: int = Field(default=1000, ge=10)
    type_events_maxlen: int = Field(default=10_000, ge=100)
    dead_letter_maxlen: int = Field(default=10_000, ge=10)
    max_queued: int = Field(default=100_000, ge=1, description="jobs not finished (waiting or "
                            "running) per worker type and kind; a submit past it is 429 "
                            "queue_full")

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            parse_target(value)  # a ValueError names what is wrong with it
        return value

    @property
    def url(self) -> str:
        return self.redis_url or f"redis://{self.redis_host}:{self.redis_port}/0"

    @property
    def target(self) -> RedisTarget:
        """Where Redis is: one server, a Sentinel master or a Cluster (streams.connection)."""
        password = self.redis_sentinel_password
        return parse_target(self.url, cluster=self.redis_cluster,
                            sentinels=self.redis_sentinels,
                            sentinel_service=self.redis_sentinel_service,
                            sentinel_password=password.get_secret_value() if password else None)

    @property
    def limits(self) -> StreamLimits:
        return StreamLimits(
            job_events_maxlen=self.job_events_maxlen,
            type_events_maxlen=self.type_events_maxlen,
            dead_maxlen=self.dead_letter_maxlen,
            retention_s=self.result_ttl_s,
            events_ttl_s=self.events_ttl_s,
            idempotency_ttl_s=self.idempotency_ttl_s,
            max_queued=self.max_queued,
        )
