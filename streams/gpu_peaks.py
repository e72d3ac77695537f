"""Peak GPU memory observed per kind of job, kept in Redis so every worker of a type learns from
every other: ``HGETALL ai:{<type>}:gpu_peaks`` shows ``<model_type>:<kind>:<batch_size>`` → MiB.
GPU admission estimates a job from its peak when one was seen (see consumers/admission.py)."""

from __future__ import annotations

from redis.asyncio import Redis

from streams import scripts
from streams.keys import QueueKeys
from streams.limits import StreamLimits


def field(model_type: str, kind: str, batch_size: int) -> str:
    return f"{model_type}:{kind}:{batch_size}"


async def read(redis: Redis, keys: QueueKeys, fields: list[str]) -> dict[str, int]:
    """The stored peaks (MiB) of ``fields``; fields never seen are absent."""
    if not fields:
        return {}
    values = await redis.hmget(keys.gpu_peaks, fields)
    return {f: int(float(v)) for f, v in zip(fields, values, strict=True) if v}


async def record(redis: Redis, keys: QueueKeys, name: str, peak_mb: int,
                 limits: StreamLimits | None = None) -> int:
    """Raise the stored peak of ``name`` to ``peak_mb`` if higher; returns the stored peak."""
    common = (limits or StreamLimits()).common_args()
    _, stored = await scripts.GPU_PEAK(redis, [keys.gpu_peaks], [*common, name, int(peak_mb)])
    return int(stored)
