"""``rediss://`` is TLS, verified against a real redis-server with a TLS port: the fast packer is
kept, a worker serves a job over it, the gateway's pool answers /health over it, and a plain
connection to the TLS port is refused (so TLS really is in use)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from aiq.redis_server import HOST, RedisServer, free_port
from gateway.app import connect
from gateway.settings import GatewaySettings
from schemas.requests import TrainingRequest
from schemas.status import JobStatus
from streams.connection import HiredisPackConnection, HiredisPackSSLConnection, client
from streams.producer import Producer
from tests.conftest import _test_redis_executable
from tests.support import running_worker, settings_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server with a TLS port (self-signed certificate); yields its rediss:// URL."""
    certs = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem"),
                    "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}"],
                   check=True, capture_output=True, timeout=60)
    tls_port = free_port()
    config = {"tls-port": str(tls_port), "tls-cert-file": str(certs / "cert.pem"),
              "tls-key-file": str(certs / "key.pem"), "tls-ca-cert-file": str(certs / "cert.pem"),
              "tls-auth-clients": "no"}
    try:
        server = RedisServer(appendonly=False, executable=_test_redis_executable(),
                             extra_config=config).start()
    except Exception as exc:  # a redis-server built without TLS
        pytest.skip(f"this redis-server cannot serve TLS: {exc}")
    try:
        yield f"rediss://{HOST}:{tls_port}/0?ssl_ca_certs={certs / 'cert.pem'}"
    finally:
        server.stop()


async def test_rediss_is_tls_with_the_fast_packer(tls_redis: str, tmp_path: Path) -> None:
    redis = client(tls_redis)
    try:
        assert redis.connection_pool.connection_class is HiredisPackSSLConnection
        assert await redis.ping()
        plain_url = tls_redis.replace("rediss://", "redis://").partition("?")[0]
        plain = client(plain_url, socket_connect_timeout=2, socket_timeout=2)
        assert plain.connection_pool.connection_class is HiredisPackConnection
        with pytest.raises(RedisConnectionError):
            await plain.ping()  # the TLS port does not speak plain RESP
        await plain.aclose()
        untrusted = client(tls_redis.partition("?")[0], socket_connect_timeout=2,
                           socket_timeout=2)
        with pytest.raises(RedisConnectionError):
            await untrusted.ping()  # certificates are verified: a self-signed one is refused
        await untrusted.aclose()

        producer = Producer(redis)
        sub = await producer.submit_training(TrainingRequest(model_type="noop"))
        async with running_worker(settings_for(tls_redis, tmp_path)):
            rec = await producer.wait(sub.job_id, timeout=60)
        assert rec.status is JobStatus.SUCCEEDED
    finally:
        await redis.aclose()


async def test_the_gateway_pool_speaks_tls(tls_redis: str) -> None:
    gateway: Redis = connect(GatewaySettings(redis_url=tls_redis))
    try:
        assert gateway.connection_pool.connection_class is HiredisPackSSLConnection
        assert await gateway.ping()
    finally:
        await gateway.aclose()
