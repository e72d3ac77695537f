"""Gateway settings: read once from the environment at the entry point and passed down."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator, model_validator

from schemas.plugins import WORKER_TYPE_NAME
from streams.settings import RedisSettings

MIB = 1024 * 1024


_HEADER_SAFE = re.compile(r"[\x21-\x7e]{8,}")
_WORKER_TYPE = re.compile(WORKER_TYPE_NAME)


class GatewaySettings(RedisSettings):
    redis_connect_timeout_s: float = Field(default=1.0, gt=0, description="a down Redis "
                                           "answers 503 after at most this long")
    redis_socket_timeout_s: float = Field(default=5.0, gt=0)
    redis_max_connections: int = Field(default=16, ge=1, description="the request pool's size: "
                                       "requests beyond it wait for a free connection, so a burst "
                                       "of clients never opens more")

    api_key: SecretStr | None = Field(default=None, description="API_KEY: when set, required on "
                                      "every request but /health and the dashboard page")
    metrics_public: bool = Field(default=False, description="METRICS_PUBLIC: serve /metrics "
                                 "without API_KEY (for a Prometheus that scrapes without "
                                 "credentials; it shows counts, never a job or the key)")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=MIB, ge=1024, description="larger request bodies get "
                                "413 before they are parsed")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After of a 503")
    submit_wait_replicas: int = Field(default=0, ge=0, le=16, description="durable submit: "
                                      "answer 202 only once this many replicas have the job "
                                      "(WAIT); 0 = off")
    submit_wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000, description="how long "
                                        "a durable submit waits for its replicas before 503 "
                                        "not_replicated")
    allowed_origins: str = Field(default="", description="ALLOWED_ORIGINS: comma-separated "
                                 "origins (scheme://host[:port], or *) whose pages may open the "
                                 "dashboard WebSocket besides the gateway's own")
    trusted_hosts: str = Field(default="", description="TRUSTED_HOSTS: comma-separated host "
                               "names (or *.domain) the gateway answers for; empty: any")
    log_level: str = "info"
    log_json: bool = Field(default=True, description="log lines as JSON (structlog), as the "
                           "workers write them; false: console lines. One line per request "
                           "(gateway/access_log.py); probes and scrapes at debug level")

    # Live feeds (gateway/hub.py): SSE per job, the /ws dashboard.
    sse_heartbeat_s: float = Field(default=15.0, gt=0, description="an idle SSE stream gets "
                                   "a `: ping` comment this often (keeps proxies from closing it)")
    sse_close_delay_s: float = Field(default=0.25, ge=0, le=5, description="a finished job's "
                                     "SSE stream ends this long after its terminal event: "
                                     "teardowns of streams of jobs that end together then do "
                                     "not delay other streams' events")
    live_buffer_events: int = Field(default=1000, ge=1, description="events buffered per SSE or "
                                    "WebSocket client; past it the oldest are dropped")
    ws_max_lag: int = Field(default=10_000, ge=1, description="a WebSocket client this many "
                            "events behind is closed with code 1013")
    ws_refresh_s: float = Field(default=2.0, gt=0, description="period of the workers and "
                                "queues messages on /ws")
    hub_block_ms: int = Field(default=5000, ge=10, description="XREAD BLOCK of the hub's reader")

    command_worker_types: str = Field(default="", description="COMMAND_WORKER_TYPES: "
                                      "comma-separated worker types that take command jobs "
                                      "(POST /jobs/command: a team's own program, run as the "
                                      "worker's user), in routing order; empty: off. Needs "
                                      "API_KEY, and workers of the type with COMMAND_JOBS=true")

    promote_retries_s: float = Field(default=1.0, ge=0, description="PROMOTE_RETRIES_S: every "
                                     "this many seconds the gateway moves the due retries of "
                                     "every worker type back into their stream, so a type "
                                     "scaled to zero is woken for them (XLEN counts them); "
                                     "0 = off, only workers promote")
    catalogue_refresh_s: float = Field(default=5.0, ge=0, description="CATALOGUE_REFRESH_S: "
                                       "every this many seconds the gateway reads the worker "
                                       "types that workers announced in Redis (their model "
                                       "types, parameters and routes); it also reads them "
                                       "before refusing an unknown model type; 0 = only then")

    @model_validator(mode="after")
    def _wait_within_socket_timeout(self) -> GatewaySettings:
        if self.submit_wait_replicas and \
                self.submit_wait_timeout_ms >= self.redis_socket_timeout_s * 1000:
            raise ValueError("SUBMIT_WAIT_TIMEOUT_MS must be below REDIS_SOCKET_TIMEOUT_S "
                             "(the WAIT would outlast the socket's read timeout)")
        return self

    @field_validator("command_worker_types")
    @classmethod
    def _command_type_names(cls, value: str) -> str:
        """Names of worker types (a type of a plugin this gateway lacks is learned from its
        workers' announcements, so names are not checked against the catalogue here)."""
        bad = [n for n in _names(value) if not _WORKER_TYPE.fullmatch(n)]
        if bad:
            raise ValueError(f"{', '.join(repr(n) for n in bad)} is not a worker type name")
        return value

    @field_validator("api_key")
    @classmethod
    def _sendable_key(cls, value: SecretStr | None) -> SecretStr | None:
        """A key a client can send in a header: printable ASCII, no spaces (HTTP headers are
        bytes; a non-ASCII key could never match)."""
        if value is not None and not _HEADER_SAFE.fullmatch(value.get_secret_value()):
            raise ValueError("must be 8 or more printable ASCII characters without spaces")
        return value

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/") for o in self.allowed_origins.split(",")
                         if o.strip())

    @property
    def command_types(self) -> tuple[str, ...]:
        """The worker types command jobs may go to, in routing order."""
        return tuple(dict.fromkeys(_names(self.command_worker_types)))

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.trusted_hosts.split(",") if h.strip())


def _names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]
