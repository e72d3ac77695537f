"""Queues: per stream length, pending, lag, oldest pending age, consumers, dead letters."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.deps import RedisDep, SettingsDep
from gateway.errors import responses
from schemas.workers import StreamInfo
from streams.inspect import queue_stats

router = APIRouter(tags=["operations"])


@router.get("/queues", response_model=list[StreamInfo], responses=responses("redis_unavailable"))
async def list_queues(redis: RedisDep, settings: SettingsDep) -> list[StreamInfo]:
    """One row per worker type and kind (see streams/inspect.py for each field's meaning)."""
    return await queue_stats(redis, settings.redis_prefix)
