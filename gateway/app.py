"""The FastAPI application: built by ``create_app(settings)``; routes live in gateway/routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.access_log import AccessLog
from gateway.auth import ApiKeyAuth, open_paths, redact_access_log
from gateway.catalogue import CatalogueWatcher
from gateway.errors import install_error_handlers
from gateway.fast_submit import FastSubmit
from gateway.hub import Hub
from gateway.middleware import BodySizeLimit, TrustedHosts
from gateway.openapi import install_openapi
from gateway.promoter import Promoter
from gateway.routes import ROUTERS, jobs
from gateway.settings import GatewaySettings
from schemas import aiq_version
from streams.connection import connect as connect_to
from streams.producer import Producer

REDIS_CLIENT_NAME = "aiq-gateway"  # CLIENT LIST shows the pool's connections under this name


def connect(settings: GatewaySettings) -> Redis:
    """One pooled client that fails fast and heals by itself.

    A command is retried once, at once, on a connection error only: that replaces a pooled
    connection that died with a Redis restart (the pool's staleness check misses them), while a
    Redis that is down still answers 503 within milliseconds. Timeouts are not retried, so a
    hung Redis costs one ``REDIS_SOCKET_TIMEOUT_S``, not several.
    """
    return connect_to(
        settings.target,
        blocking_pool=True,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout_s,  # wait for a free connection
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        client_name=REDIS_CLIENT_NAME,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: GatewaySettings = app.state.settings
    app.state.redis = redis = connect(settings)
    app.state.producer = Producer(redis, settings.limits, settings.redis_prefix,
                                  wait_replicas=settings.submit_wait_replicas,
                                  wait_timeout_ms=settings.submit_wait_timeout_ms)
    app.state.hub = hub = Hub(settings, redis)  # the one live reader, fanned out (SSE, /ws)
    hub.start()
    app.state.promoter = promoter = Promoter(settings, redis)  # due retries of every type
    promoter.start()
    # the types workers announced (plugins this gateway may not have installed)
    app.state.catalogue = catalogue = CatalogueWatcher(settings, redis, hub)
    catalogue.start()
    try:
        yield
    finally:
        await catalogue.stop()
        await promoter.stop()
        await hub.stop()
        await redis.aclose()


def create_app(settings: GatewaySettings) -> FastAPI:
    app = FastAPI(
        title="aiq",
        summary="AI job queue on Redis Streams: training and inference jobs over HTTP.",
        version=aiq_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Innermost: the submit paths answered without the routing pass (same endpoints, handlers).
    app.add_middleware(FastSubmit, endpoints=jobs.FAST_ENDPOINTS,
                       handlers=app.exception_handlers)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.hosts:
        app.add_middleware(TrustedHosts, hosts=settings.hosts)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyAuth, api_key=settings.api_key.get_secret_value(),
                           open_paths=open_paths(settings))
        redact_access_log()
    app.add_middleware(AccessLog)  # outermost: refusals by the host and key checks too
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)
    return app
