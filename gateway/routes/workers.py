"""Workers: live workers with framework versions, GPUs and running jobs."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.deps import RedisDep, SettingsDep
from gateway.errors import responses
from gateway.models import WorkerList
from streams.registry import list_workers

router = APIRouter(tags=["operations"])


@router.get("/workers", response_model=WorkerList, responses=responses("redis_unavailable"))
async def get_workers(redis: RedisDep, settings: SettingsDep) -> WorkerList:
    """Workers whose heartbeat is current, of every worker type."""
    return WorkerList(workers=await list_workers(redis, settings.redis_prefix))
