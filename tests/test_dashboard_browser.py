"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real
gateway and worker (subprocesses), live over WebSocket and SSE.

Needs the ``playwright`` Python package (a dev dependency) and a ``chromium`` on PATH (.ci/run
installs Debian's); Playwright's own browser download is never used. Without them the test is
skipped with the reason, except under CI (``CI`` set), where it fails instead.

Screenshots go to ``AIQ_SCREENSHOT_DIR`` if set, else to the test's tmp directory.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from aiq.redis_server import RedisServer
from tests.live_stack import Stack, live_stack

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 20_000


def _missing(reason: str) -> NoReturn:
    reason += " (.ci/run installs Debian's chromium; playwright is a dev dependency)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    with live_stack(redis_server, tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture(scope="module")
def browser_page() -> Iterator[Page]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    chromium = shutil.which("chromium")
    if chromium is None:
        _missing("no chromium on PATH")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("AIQ_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def row(job_id: str) -> str:
    return f'#jobs tr[data-job-id="{job_id}"]'


def wait_status(page: Page, job_id: str, status: str) -> None:
    page.locator(f"{row(job_id)} .status").filter(has_text=status).wait_for()


PROGRESS_BETWEEN = """id => {
    const bar = document.querySelector(`#jobs tr[data-job-id="${id}"] progress`);
    return bar !== null && bar.hasAttribute("value") && bar.value > 0 && bar.value < 100;
}"""


def test_live_progress_then_succeeded(stack: Stack, browser_page: Page, shots: Path) -> None:
    page = browser_page
    page.goto(f"{stack.url}/")
    page.locator("#connection").filter(has_text="live").wait_for()
    assert "diagnostic" in page.locator("#workers tbody").inner_text()
    assert "diagnostic" in page.locator("#queues tbody").inner_text()

    job_id = stack.submit("sleep", seconds=2, steps=10)
    page.wait_for_function(PROGRESS_BETWEEN, arg=job_id)  # a value strictly inside 0..100
    cells = page.locator(row(job_id)).inner_text()
    assert "running" in cells and "sleeping" in cells and "step" in cells
    page.screenshot(path=str(shots / "dashboard-running.png"), full_page=True)

    page.locator(f"{row(job_id)} button.link").click()  # open its event log (SSE)
    wait_status(page, job_id, "succeeded")
    assert page.locator(f"{row(job_id)} progress").evaluate("bar => bar.value") == 100
    log = page.locator("#event-log")
    log.locator(".event-succeeded").wait_for()
    types = log.locator(".badge").all_inner_texts()
    assert types[0] == "queued" and types[-1] == "succeeded" and "progress" in types
    assert types.count("started") == 1 and types.count("succeeded") == 1
    assert page.locator("#events-state").inner_text() == "ended: succeeded"
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)


def test_submit_form_and_escaped_error_text(stack: Stack, browser_page: Page) -> None:
    page = browser_page
    page.goto(f"{stack.url}/dashboard")
    page.locator("#connection").filter(has_text="live").wait_for()

    page.select_option("#model-type", "noop")
    page.click("#submit-button")
    result = page.locator("#submit-result")
    result.filter(has_text="queued job_").wait_for()
    job_id = result.inner_text().split()[1]
    wait_status(page, job_id, "succeeded")

    evil = '<img src=x onerror="window.__xss=1">'
    page.fill("#hyperparameters", json.dumps({evil: [1]}))  # the 422 message quotes the name
    page.click("#submit-button")
    result.filter(has_text="validation_error").wait_for()
    assert evil in result.inner_text()  # shown as text ...
    assert page.evaluate("window.__xss") is None  # ... never parsed as HTML
    assert page.locator("#submit-result img").count() == 0


def test_cancel_button_and_websocket_reconnect(stack: Stack, browser_page: Page) -> None:
    page = browser_page
    page.goto(f"{stack.url}/")
    connection = page.locator("#connection")
    connection.filter(has_text="live").wait_for()

    job_id = stack.submit("sleep", seconds=30, steps=300)
    wait_status(page, job_id, "running")
    page.locator(f"{row(job_id)} button.danger").click()
    wait_status(page, job_id, "cancelled")
    assert page.locator(f"{row(job_id)} button.danger").is_hidden()

    stack.gateway.kill()  # the feed drops: the page backs off and reconnects by itself
    stack.gateway.wait(10)
    connection.filter(has_text="reconnecting").wait_for()
    stack.restart_gateway()
    later = stack.submit("noop")  # only the new connection's snapshot or events can show it
    connection.filter(has_text="live").wait_for(timeout=30_000)
    wait_status(page, later, "succeeded")


KEY = "dashboard-key-1"
SCRIPT = ("import sys\n"
          "for i in range(5):\n"
          "    print(f'line {i} <b>not bold</b>')\n"
          "print('oops', file=sys.stderr)\n")


@pytest.fixture(scope="module")
def command_stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard-command")
    with live_stack(redis_server, tmp, api_key=KEY,
                    gateway_env={"COMMAND_WORKER_TYPES": "diagnostic"},
                    worker_settings={"command_jobs": True, "command_env_root": tmp / "envs",
                                     "command_work_root": tmp / "work"}) as running:
        yield running


def test_a_command_jobs_output_is_shown_as_text(command_stack: Stack,
                                                 browser_page: Page) -> None:
    page = browser_page
    page.goto(f"{command_stack.url}/?api_key={KEY}")
    page.locator("#connection").filter(has_text="live").wait_for()
    response = httpx.post(f"{command_stack.url}/jobs/command", timeout=10,
                          headers={"X-API-Key": KEY},
                          json={"entrypoint": ["python", "-c", SCRIPT]})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    wait_status(page, job_id, "succeeded")
    page.locator(f"{row(job_id)} button.link").click()  # its events and its output (SSE)
    page.locator("#event-log .event-succeeded").wait_for()
    output = page.locator("#job-log")
    output.filter(has_text="line 4 <b>not bold</b>").wait_for()
    assert output.locator("b").count() == 0  # shown as text, never parsed as HTML
    assert output.locator(".stdout").all_inner_texts()[:2] == [
        "line 0 <b>not bold</b>\n", "line 1 <b>not bold</b>\n"]
    assert output.locator(".stderr").all_inner_texts() == ["oops\n"]
    assert output.locator(".aiq").count() >= 2  # the worker's notes: the command, its exit


def test_pages_and_static_files_are_served(stack: Stack) -> None:
    for path in ("/", "/dashboard"):
        page = httpx.get(stack.url + path, timeout=5)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<option selected>sleep</option>" in page.text  # filled from the catalogue
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        answer = httpx.get(f"{stack.url}/static/{name}", timeout=5)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
    for bad in ("nope.js", "..%2Fapp.py", "%2E%2E%2Fsettings.py"):
        missing: Any = httpx.get(f"{stack.url}/static/{bad}", timeout=5)
        assert missing.status_code == 404, bad
        assert missing.json()["error"]["code"] == "not_found"
