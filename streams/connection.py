"""Redis clients for aiq processes.

redis-py's asyncio connection packs commands in Python, re-joining its buffer for every argument;
a batched script call has hundreds. ``HiredisPackConnection`` packs them with hiredis's C
``pack_command`` instead (what redis-py's sync client already does when hiredis is installed).
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection


class HiredisPackConnection(Connection):  # type: ignore[misc]
    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # e.g. "CLIENT SETNAME"
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


def client(url: str, **options: Any) -> Redis:
    """An asyncio client on ``url`` (decoded responses) with the fast command packer."""
    options.setdefault("decode_responses", True)
    return Redis.from_url(url, connection_class=HiredisPackConnection, **options)
