"""Consumer-group creation, shared by producers (so operators see the group at once) and workers
(which recreate it if Redis lost it)."""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streams.keys import GROUP, QueueKeys


async def ensure_groups(redis: Redis, keys: QueueKeys, streams: Iterable[str] | None = None
                        ) -> None:
    """Create the group on ``streams`` (default: the training and inference streams) from id 0
    (not ``$``), so jobs submitted before any worker existed are delivered. BUSYGROUP (it
    exists) is the only error ignored."""
    for stream in keys.streams if streams is None else streams:
        try:
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
