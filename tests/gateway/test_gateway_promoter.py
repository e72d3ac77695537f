"""The gateway's retry promoter (gateway/promoter.py): a due retry goes back into its stream,
where XLEN (what KEDA scales on) counts it, even while no worker of its type runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from redis.asyncio import Redis

from aiq.redis_server import RedisServer
from schemas.status import JobKind
from streams.keys import QueueKeys
from streams.limits import StreamLimits
from streams.retries import promote_all_due
from tests.gateway.conftest import ClientFactory
from tests.gateway.payloads import in_status, submit
from tests.support import eventually, run_burst, running_worker, settings_for

KEYS = QueueKeys("diagnostic")  # where the gateway routes model type "fail"
STREAM = KEYS.stream(JobKind.TRAINING)
BACKOFF_S = 3.0  # the first retry is due 2.4-3 s after the failure (jittered 0.8-1.0)


async def test_gateway_alone_brings_a_due_retry_back_into_the_stream(
        make_client: ClientFactory, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path, retry_backoff_s=BACKOFF_S)
    async with make_client(promote_retries_s=0.2) as client:
        job_id = await submit(client, "fail", error="retryable", fail_times=1)
        async with running_worker(settings):
            await eventually(in_status(client, job_id, "retrying"), what="the first failure")
        # The worker is gone (deregistered) and the retry waits in the delayed set, which
        # XLEN does not see: a type scaled to zero stays at zero on XLEN alone.
        assert await redis.smembers(KEYS.workers) == set()
        assert await redis.xlen(STREAM) == 0
        [(delayed_id, due_ms)] = await redis.zrange(KEYS.delayed, 0, -1, withscores=True)
        assert delayed_id == job_id and due_ms > time.time() * 1000

        # The gateway alone promotes it once due: XLEN is 1, so KEDA's streamLength wakes it.
        async def in_stream() -> bool:
            return bool(await redis.xlen(STREAM))

        await eventually(in_stream, timeout=BACKOFF_S + 5, interval=0.05,
                         what="the gateway to promote the due retry")
        [(entry_id, fields)] = await redis.xrange(STREAM)
        assert fields["job_id"] == job_id and fields["attempt"] == "2"
        assert int(entry_id.split("-")[0]) >= due_ms  # not before its backoff passed
        assert await redis.zcard(KEYS.delayed) == 0
        view = await in_status(client, job_id, "queued")()
        assert view is not None, "a promoted retry is queued"
        events = [f["type"] for _, f in await redis.xrange(KEYS.job_events(job_id))]
        assert events[-2:] == ["retrying", "requeued"]

        # A worker woken for it (as KEDA would start one) runs the second attempt.
        await run_burst(settings, timeout=30)
        done = await in_status(client, job_id, "succeeded")()
        assert done is not None and done["attempt"] == 2


async def test_promoter_off_leaves_due_retries_to_the_workers(
        make_client: ClientFactory, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """PROMOTE_RETRIES_S=0: without a worker the due retry stays in the delayed set, so the
    promotion in the test above is the gateway's doing."""
    settings = settings_for(redis_url, tmp_path, retry_backoff_s=0.5)
    async with make_client(promote_retries_s=0) as client:
        job_id = await submit(client, "fail", error="retryable", fail_times=1)
        async with running_worker(settings):
            await eventually(in_status(client, job_id, "retrying"), what="the first failure")
        [(_, due_ms)] = await redis.zrange(KEYS.delayed, 0, -1, withscores=True)
        await asyncio.sleep(max(0.0, due_ms / 1000 - time.time()) + 1.0)
        assert await redis.xlen(STREAM) == 0 and await redis.zcard(KEYS.delayed) == 1
        assert (await in_status(client, job_id, "retrying")()) is not None


async def test_promoters_racing_give_one_entry_per_retry(
        make_client: ClientFactory, redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """Two gateways (or a gateway and a worker) promoting the same due retries at once: each
    job comes back exactly once, in its own type's stream."""
    settings = settings_for(redis_url, tmp_path, retry_backoff_s=1.5)
    async with make_client(promote_retries_s=0) as client:
        ids = [await submit(client, "fail", error="retryable", fail_times=1) for _ in range(5)]
        async with running_worker(settings):
            for job_id in ids:
                await eventually(in_status(client, job_id, "retrying"), what="first failures")
    [(_, last_due_ms)] = await redis.zrange(KEYS.delayed, -1, -1, withscores=True)
    await asyncio.sleep(max(0.0, last_due_ms / 1000 - time.time()) + 0.1)  # all due now
    every_type = [QueueKeys(name) for name in ("sklearn", "diagnostic", "pytorch-2.1")]
    counts = await asyncio.gather(*(promote_all_due(redis, every_type, StreamLimits())
                                    for _ in range(4)))
    assert sum(counts) == len(ids)
    assert await redis.xlen(STREAM) == len(ids) and await redis.zcard(KEYS.delayed) == 0
    assert sorted(f["job_id"] for _, f in await redis.xrange(STREAM)) == sorted(ids)


async def test_promoter_carries_on_after_a_redis_outage(
        make_client: ClientFactory, redis: Redis, redis_url: str, tmp_path: Path,
        redis_server: RedisServer) -> None:
    """Redis down for a while (a managed Redis failing over): the promoter backs off instead
    of dying, and promotes the due retry once Redis is back."""
    settings = settings_for(redis_url, tmp_path, retry_backoff_s=2.0)
    async with make_client(promote_retries_s=0.1) as client:
        job_id = await submit(client, "fail", error="retryable", fail_times=1)
        async with running_worker(settings):
            await eventually(in_status(client, job_id, "retrying"), what="the first failure")
        redis_server.stop()  # a clean stop: the AOF keeps the delayed retry
        try:
            await asyncio.sleep(0.5)  # several failed ticks
        finally:
            redis_server.start()

        async def in_stream() -> bool:
            return bool(await redis.xlen(STREAM))

        await eventually(in_stream, timeout=10, interval=0.05,
                         what="the promotion after the outage")
        assert await redis.zcard(KEYS.delayed) == 0
