"""deploy/nginx/aiq.conf, the reverse proxy of deploy/compose.yaml, run for real: Debian's nginx in
front of a real gateway process and a diagnostic worker on the session's Redis.

The config is the shipped file rendered by the shipped deploy/nginx/render.sh (the nginx image's
start-up step), with the test's listen port and upstream: only the two placeholders differ from
what compose runs. nginx's main file here is a minimal one (pid, logs and temp paths in the
test's directory) that includes it, as Debian's nginx.conf includes conf.d/*.conf.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from aiq.redis_server import RedisServer, free_port
from tests.deploy_tools import DEPLOY, nginx_binary
from tests.live_stack import Stack, live_stack, stop, wait_until

pytestmark = pytest.mark.slow

TEMPLATE = DEPLOY / "nginx" / "aiq.conf"
RENDER = DEPLOY / "nginx" / "render.sh"


@dataclass
class Proxy:
    url: str  # http://127.0.0.1:<nginx port>
    port: int
    stack: Stack
    conf: Path  # the rendered aiq.conf

    def logs(self) -> str:
        err = self.conf.parent / "error.log"
        return self.stack.logs() + "\n--- nginx error.log\n" + (
            err.read_text(errors="replace")[-3000:] if err.exists() else "")


def render(template: Path, out: Path, port: int, upstream: str) -> None:
    env = {**os.environ, "NGINX_PORT": str(port), "GATEWAY_UPSTREAM": upstream}
    subprocess.run(["sh", str(RENDER), str(template), str(out)], env=env, check=True,
                   timeout=10)


def _main_conf(tmp: Path, include: Path) -> Path:
    user = ""
    if os.geteuid() == 0:  # nginx's workers would otherwise run as nobody, shut out of tmp
        user = f"user {pwd.getpwuid(0).pw_name};"
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir(exist_ok=True)
    main = tmp / "nginx.conf"
    main.write_text(f"""
{user}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {include};
}}
""")
    return main


@contextlib.contextmanager
def nginx_in_front(stack: Stack, tmp: Path, template: Path = TEMPLATE) -> Iterator[Proxy]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "aiq.conf"
    render(template, conf, port, f"127.0.0.1:{stack.port}")
    main = _main_conf(tmp, conf)
    nginx = nginx_binary()
    check = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp)], capture_output=True,
                           text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([nginx, "-c", str(main), "-p", str(tmp)],
                            stderr=(tmp / "stderr.log").open("ab"))
    proxy = Proxy(f"http://127.0.0.1:{port}", port, stack, conf)
    try:
        wait_until(lambda: _answers(proxy.url), 20, "nginx /health", stack)
        yield proxy
    finally:
        stop(proc)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    with live_stack(redis_server, tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with nginx_in_front(stack, tmp_path_factory.mktemp("nginx")) as p:
        yield p


def _submit(url: str, **hp: Any) -> str:
    response = httpx.post(f"{url}/jobs/training", timeout=10,
                          json={"model_type": "sleep", "hyperparameters": hp})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def _cancel(url: str, job_id: str) -> None:
    response = httpx.post(f"{url}/jobs/{job_id}/cancel", timeout=10)
    assert response.status_code in (200, 202), response.text


def _sse_events(response: httpx.Response) -> Iterator[tuple[float, dict[str, Any]]]:
    """(arrival time, data) of each event as the client receives it."""
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield time.monotonic(), json.loads("\n".join(data))
            data = []


def _follow_until_started(proxy_url: str, job_id: str, window_s: float
                          ) -> tuple[list[str], bool]:
    """Event types read through nginx while the job runs; True once a ``started`` or
    ``progress`` event arrived within ``window_s`` of opening the stream. Then cancels the job
    and reads on to the end of the stream."""
    seen: list[str] = []
    live = False
    opened = time.monotonic()
    with httpx.stream("GET", f"{proxy_url}/jobs/{job_id}/events",
                      timeout=httpx.Timeout(10, read=window_s + 15)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for arrived, event in _sse_events(response):
            seen.append(event["type"])
            if event["type"] in ("started", "progress") and not live:
                live = arrived - opened < window_s
                if live:
                    _cancel(proxy_url, job_id)
    return seen, live


def test_sse_events_arrive_live_through_nginx(proxy: Proxy) -> None:
    """A 60 s job's first events come through nginx within seconds of happening (a buffering
    proxy holds them until its buffer fills or the stream ends); the cancel's events follow,
    and the stream closes after the terminal one."""
    job_id = _submit(proxy.url, seconds=60, steps=600)
    seen, live = _follow_until_started(proxy.url, job_id, window_s=10)
    assert live, (seen, proxy.logs())
    assert seen[0] == "queued"
    assert "cancel_requested" in seen
    assert seen[-1] == "cancelled", seen


def test_the_sse_check_detects_a_buffering_proxy(proxy: Proxy, tmp_path: Path) -> None:
    """The same check fails behind a proxy that holds events: the shipped config with SSE
    buffering on (the gateway's X-Accel-Buffering: no ignored) and gzip on for event streams.
    nginx then sends the job's events only when the stream ends. (Measured with nginx 1.22:
    either setting alone still lets the events through; the shipped location turns both off.)"""
    shipped = TEMPLATE.read_text()
    assert shipped.count("proxy_buffering off;") == 2 and shipped.count("gzip off;") == 1
    buffered = tmp_path / "buffered.conf"
    buffered.write_text(shipped.replace(
        "proxy_buffering off;", "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;", 1
    ).replace("gzip off;", "gzip on; gzip_types text/event-stream; gzip_min_length 0;"))
    with nginx_in_front(proxy.stack, tmp_path / "nginx", template=buffered) as bad:
        job_id = _submit(bad.url, seconds=6, steps=60)
        seen, live = _follow_until_started(bad.url, job_id, window_s=4)
    assert not live, seen
    assert seen[0] == "queued" and seen[-1] == "succeeded", seen


def test_websocket_frames_pass_with_the_pages_origin(proxy: Proxy) -> None:
    """/ws is upgraded through nginx: the snapshot, then a live event of a job submitted through
    nginx. The browser's Origin (nginx's own address) is accepted because nginx passes Host on
    with its port."""
    ws_url = proxy.url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, origin=Origin(proxy.url), open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "snapshot", first
        job_id = _submit(proxy.url, seconds=0.2, steps=2)
        deadline = time.monotonic() + 20
        types: list[str] = []
        while "succeeded" not in types:
            assert time.monotonic() < deadline, (types, proxy.logs())
            msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("type") == "event" and msg.get("event", {}).get("job_id") == job_id:
                types.append(msg["event"]["type"])
        assert types[0] in ("queued", "started")


def test_a_foreign_origin_is_still_refused(proxy: Proxy) -> None:
    ws_url = proxy.url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus, match="403"), connect(
            ws_url, origin=Origin("http://evil.example"), open_timeout=10):
        pass


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 8 * 1024 * 1024])
def test_a_body_over_the_limit_gets_the_gateways_json_413(proxy: Proxy, size: int) -> None:
    """nginx refuses it (a gateway refusing it mid-upload would make nginx answer 502), with
    the very JSON the gateway itself sends."""
    body = b"x" * size
    headers = {"content-type": "application/json"}
    direct = httpx.post(f"{proxy.stack.url}/jobs/training", content=body, headers=headers,
                        timeout=10)
    assert direct.status_code == 413
    for _ in range(5):  # the race this avoids was intermittent
        via = httpx.post(f"{proxy.url}/jobs/training", content=body, headers=headers, timeout=10)
        assert via.status_code == 413, via.text
        assert via.headers["content-type"] == "application/json"
        assert via.json() == direct.json()


def test_a_body_at_the_limit_reaches_the_gateway(proxy: Proxy) -> None:
    body = b"x" * (1024 * 1024)
    response = httpx.post(f"{proxy.url}/jobs/training", content=body, timeout=10,
                          headers={"content-type": "application/json"})
    assert response.status_code == 422  # parsed by the gateway: not JSON
    assert response.json()["error"]["code"] == "validation_error"


def test_rendering_fills_exactly_the_two_placeholders(tmp_path: Path) -> None:
    out = tmp_path / "aiq.conf"
    render(TEMPLATE, out, 8123, "gateway:8000")
    text = out.read_text()
    assert "${" not in text
    assert "listen 8123;" in text and "server gateway:8000;" in text
    assert "client_max_body_size 1048576;" in text and '"max_body_bytes":1048576}' in text
    # nginx's own variables are left alone
    for var in ("$http_host", "$http_upgrade", "$aiq_connection", "$proxy_add_x_forwarded_for"):
        assert var in text
