"""Consumer-group creation, shared by producers (so operators see the group at once) and workers
(which recreate it if Redis lost it)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streams.keys import GROUP, QueueKeys


async def ensure_groups(redis: Redis, keys: QueueKeys) -> None:
    """Create the group on both streams from id 0 (not ``$``), so jobs submitted before any
    worker existed are delivered. BUSYGROUP (it exists) is the only error ignored."""
    for stream in keys.streams:
        try:
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
