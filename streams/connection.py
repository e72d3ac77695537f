"""Redis clients for aiq processes.

redis-py's asyncio connection packs commands in Python, re-joining its buffer for every argument;
a batched script call has hundreds. ``HiredisPackConnection`` packs them with hiredis's C
``pack_command`` instead (what redis-py's sync client already does when hiredis is installed).

``rediss://`` URLs get TLS (``HiredisPackSSLConnection``: the same packer over redis-py's
``SSLConnection``, with the URL's ``ssl_*`` options, e.g. ``?ssl_ca_certs=/etc/ca.pem``). redis-py
lets a URL's scheme override a ``connection_class`` argument, so the class is set on the pool
once it is made (``use_fast_packer``), before it opens a connection.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection


class _HiredisPacker:
    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # e.g. "CLIENT SETNAME"
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


class HiredisPackConnection(_HiredisPacker, Connection):  # type: ignore[misc]
    pass


class HiredisPackSSLConnection(_HiredisPacker, SSLConnection):  # type: ignore[misc]
    pass


def use_fast_packer(pool: ConnectionPool) -> ConnectionPool:
    """Give ``pool`` (made from a URL, no connection yet) the hiredis packer, keeping TLS when
    the URL asked for it."""
    tls = issubclass(pool.connection_class, SSLConnection)
    pool.connection_class = HiredisPackSSLConnection if tls else HiredisPackConnection
    return pool


def client(url: str, **options: Any) -> Redis:
    """An asyncio client on ``url`` (decoded responses) with the fast command packer; TLS for
    ``rediss://``."""
    options.setdefault("decode_responses", True)
    return Redis.from_pool(use_fast_packer(ConnectionPool.from_url(url, **options)))
