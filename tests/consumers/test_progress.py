"""Progress coalescing: at most one report per interval, but never a lost stage change and
always the last report."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumers.frameworks.base import CancelRequested
from consumers.progress import JobRun
from schemas.status import JobKind
from streams.delivery import Delivery


def make_run(interval: float, cancel_after: int | None = None
             ) -> tuple[JobRun, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def publish(_d: Delivery, data: dict[str, Any]) -> bool:
        sent.append(data)
        return cancel_after is not None and len(sent) >= cancel_after

    d = Delivery("s", JobKind.TRAINING, "1-0", {"job_id": "job_x"})
    return JobRun(d, asyncio.get_running_loop(), publish, interval), sent


async def test_bursts_coalesce_but_stages_and_last_report_survive() -> None:
    run, sent = make_run(interval=0.2)

    def job() -> None:
        for step in range(1, 201):
            run("training", step=step, steps=200, loss=0.0)
        run("resumed", message="resumed from checkpoint after epoch 2")
        for step in range(1, 201):
            run("evaluating", step=step, steps=200)

    await asyncio.to_thread(job)
    await run.drain()
    stages = [s["stage"] for s in sent]
    assert len(sent) < 20  # 401 reports coalesced
    assert stages.index("training") < stages.index("resumed") < stages.index("evaluating")
    last_training = [s for s in sent if s["stage"] == "training"][-1]
    assert last_training["step"] == 200 and last_training["loss"] == 0.0  # zeros are kept
    assert sent[-1] == {"stage": "evaluating", "step": 200, "steps": 200, "percent": 100.0}


async def test_cancel_reported_by_publish_stops_the_job_at_next_step() -> None:
    run, _ = make_run(interval=0.0, cancel_after=1)
    run("training", step=1, steps=10)
    await run.drain()
    with pytest.raises(CancelRequested):
        run("training", step=2, steps=10)
