"""``aiq watch``: follow a job live over its SSE stream (``GET /jobs/{id}/events``).

:func:`watch` connects, renders progress and lifecycle events, and on a dropped connection
reconnects with backoff and ``Last-Event-ID``, so no event is lost or shown twice (events whose
id is not after the last one seen are also dropped, should a server replay them). The SSE
parsing is ``aiq/sse.py``.

Exit codes (:class:`WatchExit`): 0 the job succeeded, 1 it failed, 2 it was cancelled, 3 no such
job (or a request the gateway refused), 4 the gateway stayed unreachable for
``reconnect_timeout_s``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Annotated, Any, Protocol

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text
from typer.core import TyperCommand

from aiq.sse import SseDecoder, SseEvent, event_id_key, iter_sse_bytes, parse_sse
from streams.backoff import Backoff

__all__ = [
    "DEFAULT_URL",
    "WATCH_HELP",
    "SseDecoder",
    "SseEvent",
    "UsageExits3",
    "WatchExit",
    "WatchOptions",
    "event_id_key",
    "iter_sse_bytes",
    "parse_sse",
    "watch",
    "watch_command",
]

# --- watching ------------------------------------------------------------------------------


class WatchExit(IntEnum):
    SUCCEEDED = 0
    FAILED = 1
    CANCELLED = 2
    USAGE = 3  # unknown job, or a request the gateway refused
    UNREACHABLE = 4


EXIT_CODES_HELP = ("Exit status: 0 succeeded, 1 failed, 2 cancelled, 3 unknown job or request "
                   "refused, 4 gateway unreachable.")
DEFAULT_URL = "http://127.0.0.1:8000"

TERMINAL_EXIT = {
    "succeeded": WatchExit.SUCCEEDED,
    "failed": WatchExit.FAILED,
    "cancelled": WatchExit.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class WatchOptions:
    base_url: str
    job_id: str
    json_lines: bool = False  # one JSON event per line instead of a progress bar
    reconnect_timeout_s: float = 60.0  # give up after this long without a connection
    read_timeout_s: float = 60.0  # no byte (not even a heartbeat) for this long: reconnect
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0


class _Refused(Exception):
    """The gateway answered, and retrying will not help (404, 4xx)."""


class _Dropped(Exception):
    """The connection failed or ended before the terminal event: reconnect."""


class Renderer(Protocol):
    def event(self, event: dict[str, Any]) -> None: ...
    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


def watch(options: WatchOptions, console: Console | None = None,
          client: httpx.Client | None = None,
          sleep: Callable[[float], None] = time.sleep,
          renderer: Renderer | None = None) -> WatchExit:
    """Follow one job until its terminal event; see the module docstring for exit codes.
    ``renderer``: how events are shown (default: a progress view, or JSON lines)."""
    console = console or Console(soft_wrap=True)
    errors = Console(stderr=True, soft_wrap=True)
    if renderer is None:
        renderer = (JsonLines(console) if options.json_lines
                    else ProgressView(console, options.job_id))
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(10.0, read=options.read_timeout_s))
    try:
        return _Follower(options, http, renderer, errors, sleep).run()
    finally:
        renderer.close()
        if own:
            http.close()


class _Follower:
    """The reconnect loop: one instance per watched job."""

    def __init__(self, options: WatchOptions, http: httpx.Client, renderer: Renderer,
                 errors: Console, sleep: Callable[[float], None]) -> None:
        self.options = options
        self.http = http
        self.renderer = renderer
        self.errors = errors
        self.sleep = sleep
        self.url = f"{options.base_url.rstrip('/')}/jobs/{options.job_id}/events"
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self._connected = False  # this attempt got a 200
        self._got_events = False  # ... and at least one new event

    def run(self) -> WatchExit:
        backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s, jitter=0.2)
        connected_at = time.monotonic()
        while True:
            try:
                outcome = self._stream()
            except _Refused as exc:
                self.errors.print(Text(f"aiq watch: {exc}"))
                return WatchExit.USAGE
            except _Dropped as exc:
                if self._connected:
                    connected_at = time.monotonic()
                if self._got_events:
                    backoff.reset(self._first_delay())
                waited = time.monotonic() - connected_at
                if waited > self.options.reconnect_timeout_s:
                    self.errors.print(Text(f"aiq watch: gave up after {waited:.0f} s: {exc}"))
                    return WatchExit.UNREACHABLE
                resume = f", resuming after {self.last_id}" if self.last_id else ""
                self.renderer.note(f"connection lost ({exc}); reconnecting in "
                                   f"{backoff.delay:.1f} s{resume}")
                self.sleep(backoff.next())
                continue
            return outcome

    def _first_delay(self) -> float:
        if self.retry_ms is not None:
            return self.retry_ms / 1000
        return self.options.backoff_initial_s

    def _stream(self) -> WatchExit:
        self._connected = self._got_events = False
        headers = {"Accept": "text/event-stream"}
        if os.environ.get("AIQ_API_KEY"):
            headers["X-API-Key"] = os.environ["AIQ_API_KEY"]
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        decoder = SseDecoder()
        try:
            with self.http.stream("GET", self.url, headers=headers) as response:
                self._check(response)
                for sse in iter_sse_bytes(response.iter_bytes(), decoder):
                    outcome = self._handle(sse)
                    if outcome is not None:
                        return outcome
        except httpx.TransportError as exc:
            raise _Dropped(_describe(exc)) from exc
        finally:
            self.retry_ms = decoder.retry_ms if decoder.retry_ms is not None else self.retry_ms
        raise _Dropped("the stream ended before the job did")

    def _check(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            self._connected = True
            return
        response.read()
        message = _error_message(response)
        if response.status_code >= 500 or response.status_code == 429:
            raise _Dropped(f"HTTP {response.status_code}: {message}")
        raise _Refused(message)

    def _handle(self, sse: SseEvent) -> WatchExit | None:
        if sse.id is not None:
            if self.last_id is not None and event_id_key(sse.id) <= event_id_key(self.last_id):
                return None  # already shown: a replay would be a duplicate
            self.last_id = sse.id
        self._got_events = True
        try:
            event = json.loads(sse.data)
        except ValueError:
            self.renderer.note(f"skipped an event that is not JSON: {sse.data[:100]!r}")
            return None
        if not isinstance(event, dict):
            return None
        event.setdefault("type", sse.event)
        self.renderer.event(event)
        return TERMINAL_EXIT.get(str(event["type"]))


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_message(response: httpx.Response) -> str:
    """The gateway's ``{"error": {"code", "message"}}``, else the status and body."""
    try:
        error = response.json().get("error") or {}
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {response.status_code} {response.text[:200]}".strip()


# --- rendering -----------------------------------------------------------------------------


class JsonLines:
    """``--json``: each event as one JSON line, notes on stderr; for scripts and tests."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.errors = Console(stderr=True, soft_wrap=True)

    def event(self, event: dict[str, Any]) -> None:
        self.console.out(json.dumps(event, separators=(",", ":")), highlight=False)

    def note(self, message: str) -> None:
        self.errors.print(Text(message))

    def close(self) -> None:
        pass


class ProgressView:
    """A rich progress bar for progress events and one line per lifecycle event."""

    def __init__(self, console: Console, job_id: str) -> None:
        self.console = console
        self.job_id = job_id
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"), console=console, transient=False,
        )
        self.task: TaskID | None = None

    def event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", ""))
        if kind == "progress":
            self._progress(event)
            return
        if kind == "log":  # a command job's output line
            style = "" if event.get("stream") == "stdout" else "dim"
            self.console.print(Text(str(event.get("line", "")), style=style))
            return
        if kind in TERMINAL_EXIT:
            self._stop()
        self.console.print(lifecycle_line(event))

    def note(self, message: str) -> None:
        self.console.print(Text(message, style="yellow"))

    def close(self) -> None:
        self._stop()

    def _progress(self, event: dict[str, Any]) -> None:
        percent = event.get("percent")
        known = isinstance(percent, int | float)
        completed = float(percent) if isinstance(percent, int | float) else 0.0
        description = str(event.get("stage") or "running")
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(description, total=None, detail="")
        self.progress.update(self.task, description=description,
                             total=100.0 if known else None,
                             completed=completed,
                             detail=progress_detail(event))

    def _stop(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def _clock(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "--:--:--"
    return datetime.fromtimestamp(ts / 1000).strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """``12s``, ``3m05s``, ``1h02m``."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_detail(event: dict[str, Any]) -> str:
    """``epoch 1/3 · step 5/10 · loss 0.1234 · ETA 12s · <message>``."""
    parts = []
    for name in ("epoch", "step"):
        value, total = event.get(name), event.get(f"{name}s")
        if value is not None:
            parts.append(f"{name} {value}/{total}" if total is not None else f"{name} {value}")
    if isinstance(event.get("loss"), int | float):
        parts.append(f"loss {event['loss']:.4g}")
    if isinstance(event.get("eta_s"), int | float):
        parts.append(f"ETA {duration(event['eta_s'])}")
    if event.get("message"):
        parts.append(str(event["message"]))
    return " · ".join(parts)


def _compact(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_text(error: Any) -> str:
    if isinstance(error, dict) and error:
        return f"{error.get('code', 'error')}: {error.get('message', '')}"
    return ""


def lifecycle_detail(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "queued":
        return f"on {event.get('worker_type') or '?'} (position {event.get('position', 0)})"
    if kind == "waiting":  # held by a GPU worker until its memory estimate fits
        return str(event.get("message") or event.get("reason") or "")
    if kind == "started":
        return (f"on {event.get('worker', '?')} (attempt {event.get('attempt', 1)}, "
                f"delivery {event.get('deliveries', 1)})")
    if kind == "retrying":
        delay = duration(float(event.get("delay_ms", 0)) / 1000)
        return f"attempt {event.get('attempt')} in {delay}: {_error_text(event.get('error'))}"
    if kind == "requeued":
        return str(event.get("reason", ""))
    if kind == "succeeded":
        return _compact(event.get("result") or {})
    if kind == "failed":
        return _error_text(event.get("error"))
    return ""


_STYLES = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "retrying": "yellow"}


def lifecycle_line(event: dict[str, Any]) -> Text:
    """``12:00:01  started    on host-1-ab (attempt 1, delivery 1)``: markup-free Text."""
    kind = str(event.get("type", "?"))
    return Text.assemble(
        f"{_clock(event.get('ts'))}  ",
        (f"{kind:<16}", _STYLES.get(kind, "bold")),
        " ",
        lifecycle_detail(event),
    )


# --- the command ---------------------------------------------------------------------------

WATCH_HELP = ("Follow a job live: a progress bar and one line per lifecycle event, resuming "
              "after a dropped connection. " + EXIT_CODES_HELP)
UrlOption = Annotated[str, typer.Option(envvar="AIQ_URL", help="Base URL of the gateway.")]


class UsageExits3(TyperCommand):
    """A usage error exits 3: click's default, 2, means "cancelled" for these commands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:  # click's UsageError (typer vendors its own click)
            if getattr(exc, "exit_code", None) == 2:
                setattr(exc, "exit_code", int(WatchExit.USAGE))  # noqa: B010
            raise


def watch_command(
    job_id: Annotated[str, typer.Argument(help="The job's id, job_<uuid>.")],
    url: UrlOption = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
    reconnect_timeout: Annotated[float, typer.Option(
        min=0, help="Give up (exit 4) after this many seconds without a connection.")] = 60.0,
) -> None:
    options = WatchOptions(base_url=url, job_id=job_id, json_lines=as_json,
                           reconnect_timeout_s=reconnect_timeout)
    try:
        code = watch(options)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(int(code))
