"""Lease renewal, on the maintenance timer: every entry this worker holds (jobs running or
being written, and jobs held for GPU memory) is claimed again with its idle time reset, in one
``renew.lua`` call per stream. A lost lease stops the job; a cancel request is passed on.
Cancel requests are also looked up on their own, faster timer (``watch_cancels``)."""

from __future__ import annotations

import asyncio
from typing import Any

from consumers.admission import Admission
from consumers.cpu_admission import NoAdmission
from consumers.loops import sleep_unless
from consumers.progress import JobRun
from streams.consumer import QueueConsumer
from streams.endings import RenewCode


async def renew_leases(queue: QueueConsumer, runs: dict[str, JobRun],
                       admission: Admission | NoAdmission, log: Any) -> dict[str, RenewCode]:
    """Entry id -> what its renewal answered (empty: nothing held)."""
    in_flight, held = list(runs.values()), admission.held()
    if not in_flight and not held:
        return {}
    codes = await queue.renew([*(r.delivery for r in in_flight), *held])
    for d in held:  # waiting for GPU memory: leased like a running job
        if codes.get(d.entry_id) is RenewCode.LOST:
            admission.drop(d.entry_id)
            log.warning("lease of a held job lost", job_id=d.job_id)
    for run in in_flight:
        code = codes.get(run.delivery.entry_id, RenewCode.RENEWED)
        if code is RenewCode.LOST:
            run.lost = True  # the job stops at its next step; its result is dropped
            log.warning("lease lost", job_id=run.delivery.job_id)
        elif code is RenewCode.CANCEL_REQUESTED:
            run.cancel_requested = True
    return codes


async def watch_cancels(queue: QueueConsumer, runs: dict[str, JobRun], stopping: asyncio.Event,
                        every_s: float) -> None:
    """Tell running jobs of their cancel requests, then wait ``every_s`` (CANCEL_CHECK_S): a
    job in one long step (a native fit, a day-long sleep) publishes no progress whose answer
    would carry it, and lease renewal comes only every third of a lease."""
    waiting = [r for r in runs.values() if not r.cancel_requested]
    if waiting:
        flags = await queue.cancel_requested([r.delivery for r in waiting])
        for run, flag in zip(waiting, flags, strict=True):
            run.cancel_requested = run.cancel_requested or flag
    await sleep_unless(stopping, every_s)
