"""JOB_THREAD_POLICY: the job threads run under SCHED_BATCH (the default) or the normal policy,
the event loop's thread always under the normal one; results and errors come back to the loop
either way. A thread without a native id is refused, never taken for the calling thread."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from consumers.threads import JobThreads, Policy, set_policy

LINUX = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="scheduling policies: Linux")


def _policy_here() -> int:
    return os.sched_getscheduler(0)  # 0: the calling thread


@LINUX
@pytest.mark.parametrize(("asked", "number"), [("batch", "SCHED_BATCH"),
                                                ("normal", "SCHED_OTHER")])
async def test_job_threads_run_under_the_policy_asked(asked: Policy, number: str) -> None:
    loop_policy = _policy_here()
    threads = JobThreads(asyncio.get_running_loop(), 3, asked)
    try:
        assert threads.policy == asked and not threads.policy_error
        # as many calls as threads, each held at a barrier until all arrived: every thread
        # answers, not just the first one free
        barrier = threading.Barrier(3, timeout=30)

        def policy_after_all_arrived() -> tuple[int, int]:
            barrier.wait()
            return threading.get_native_id(), _policy_here()

        seen = await asyncio.wait_for(asyncio.gather(
            *(threads.run(policy_after_all_arrived) for _ in range(3))), timeout=60)
    finally:
        threads.shutdown()
    assert len({tid for tid, _ in seen}) == 3  # three distinct job threads answered
    assert {policy for _, policy in seen} == {getattr(os, number)}
    assert _policy_here() == loop_policy == os.SCHED_OTHER  # the loop's thread is untouched


async def test_results_and_errors_come_back_under_batch() -> None:
    threads = JobThreads(asyncio.get_running_loop(), 2, "batch")
    try:
        assert await asyncio.wait_for(threads.run(sum, [1, 2, 3]), timeout=30) == 6
        with pytest.raises(ZeroDivisionError):
            await asyncio.wait_for(threads.run(divmod, 1, 0), timeout=30)
    finally:
        threads.shutdown()


@LINUX
def test_a_thread_without_a_native_id_is_refused_not_taken_for_the_caller() -> None:
    before = _policy_here()
    never_started = threading.Thread(target=lambda: None)
    with pytest.raises(AttributeError, match="native thread ids"):
        set_policy([never_started], "batch")
    assert _policy_here() == before == os.SCHED_OTHER
