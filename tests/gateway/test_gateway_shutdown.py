"""SIGTERM to a gateway with open SSE streams: the streams end and the process exits promptly
(uvicorn would otherwise wait for the endless responses)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from aiq.redis_server import RedisServer
from tests.live_stack import live_stack, wait_until

pytestmark = pytest.mark.slow


def test_sigterm_ends_open_streams_and_exits(redis_server: RedisServer, tmp_path: Path) -> None:
    with live_stack(redis_server, tmp_path) as stack:
        job_id = stack.submit("sleep", seconds=60, steps=60)
        received: list[str] = []
        ended = threading.Event()

        def follow() -> None:
            with httpx.stream("GET", f"{stack.url}/jobs/{job_id}/events",
                              timeout=httpx.Timeout(5, read=60)) as response:
                for line in response.iter_lines():
                    received.append(line)
            ended.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        wait_until(lambda: any(x.startswith("event: started") for x in received), 20,
                   "the stream to show the job started", stack)
        stack.gateway.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        # uvicorn re-raises the signal once it has shut down cleanly
        assert stack.gateway.wait(15) in (0, -signal.SIGTERM)
        took = time.monotonic() - t0
        assert ended.wait(5), "the SSE stream did not end"
    assert took < 5, f"gateway took {took:.1f} s to stop with an open stream"
