"""``aiq logs JOB_ID [-f]``: a command job's output (``GET /jobs/{id}/logs``; with ``-f``,
live over its SSE stream until the job ends, resuming after a dropped connection).

Lines go out as the program wrote them: its stdout to stdout, its stderr and the worker's own
notes (``aiq`` lines: the environment's build, how the program ended) to stderr. With ``-f``
the exit status is the job's, as for ``aiq watch``: 0 succeeded, 1 failed, 2 cancelled, 3
unknown job or request refused, 4 gateway unreachable.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, TextIO

import httpx
import typer

from aiq.watch import (
    DEFAULT_URL,
    EXIT_CODES_HELP,
    UrlOption,
    WatchExit,
    WatchOptions,
    watch,
)
from aiq.watch import _error_message as error_message

PAGE = 1000
LOGS_HELP = ("Print a command job's output: its stdout to stdout, its stderr and the worker's "
             "notes to stderr. -f follows it live until the job ends. " + EXIT_CODES_HELP)


class LogLines:
    """A renderer for ``watch``: log lines as written, the job's end as one note."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None,
                 notes: bool = True) -> None:
        self.out, self.err, self.notes = out or sys.stdout, err or sys.stderr, notes

    def line(self, line: dict[str, Any]) -> None:
        stream = line.get("stream")
        if stream == "aiq" and not self.notes:
            return
        target = self.out if stream == "stdout" else self.err
        target.write(f"{line.get('line', '')}\n")
        target.flush()

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "log":
            self.line(event)
        elif kind in ("succeeded", "failed", "cancelled") and self.notes:
            self.note(f"job {kind}{_why(event.get('error') or {})}")

    def note(self, message: str) -> None:
        self.err.write(f"aiq logs: {message}\n")
        self.err.flush()

    def close(self) -> None:
        return None


def _why(error: dict[str, Any]) -> str:
    """``: <code> (exit code 3)``, or its message's first line: the stderr tail in a command
    job's error message was printed already."""
    if not error:
        return ""
    if "exit_code" in error:
        return f": {error.get('code')} (exit code {error['exit_code']})"
    if "signal" in error:
        return f": {error.get('code')} ({error['signal']})"
    first = str(error.get("message", "")).partition("\n")[0]
    return f": {error.get('code')}: {first}"


def _headers() -> dict[str, str]:
    key = os.environ.get("AIQ_API_KEY")
    return {"X-API-Key": key} if key else {}


def print_pages(base_url: str, job_id: str, renderer: LogLines,
                client: httpx.Client | None = None) -> int:
    """Every line kept so far, page after page; the exit status (0, or 3 when refused, 4
    when the gateway is unreachable)."""
    http = client or httpx.Client(timeout=30)
    url, after = f"{base_url.rstrip('/')}/jobs/{job_id}/logs", "0-0"
    try:
        while True:
            try:
                response = http.get(url, params={"after": after, "limit": PAGE},
                                    headers=_headers())
            except httpx.TransportError as exc:
                renderer.note(f"gateway unreachable: {exc}")
                return int(WatchExit.UNREACHABLE)
            if response.status_code != 200:
                renderer.note(error_message(response))
                return int(WatchExit.USAGE)
            page = response.json()
            for line in page["lines"]:
                renderer.line(line)
            if len(page["lines"]) < PAGE:
                return 0
            after = page["next"]
    finally:
        if client is None:
            http.close()


def logs_command(
    job_id: Annotated[str, typer.Argument(help="The job's id, job_<uuid>.")],
    url: UrlOption = DEFAULT_URL,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Follow the output live until the job ends.")
                      ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Only the program's own lines, no aiq notes.")
                     ] = False,
) -> None:
    renderer = LogLines(notes=not quiet)
    if not follow:
        raise typer.Exit(print_pages(url, job_id, renderer))
    try:
        code = watch(WatchOptions(base_url=url, job_id=job_id), renderer=renderer)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(int(code))
