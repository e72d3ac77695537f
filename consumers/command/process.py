"""One program run under the supervisor (``supervisor.py``), from a job's thread: its stdout and
stderr as lines, its reports (``AIQ_REPORT_FD``), its exit; stopped when the job must stop.

The thread polls the pipes (``selectors``) and the job's stop check every ``POLL_S``. When the
check raises (cancel, timeout, the worker draining or losing the lease), the supervisor is asked
to stop the program (SIGTERM to its process group and every descendant, SIGKILL after the grace
period) and the exception goes on once the program is gone. Should the supervisor itself not
answer, the thread kills both process groups. The worker keeps the only write end of the
supervisor's lifeline: however the worker ends, the supervisor sees end of file and stops the
program, grandchildren included.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SUPERVISOR = Path(__file__).with_name("supervisor.py")
POLL_S = 0.05
READ_BYTES = 64 * 1024
HARD_KILL_AFTER_S = 5.0  # past the grace period: the supervisor did not answer
DRAIN_AFTER_EXIT_S = 5.0  # output still open once the program ended (nothing should hold it)
TRUNCATED = " [... line truncated by aiq]"
REPORT_FD = 3  # where the program finds its report pipe (supervisor.py)


@dataclass(slots=True)
class Exit:
    """How the program ended (what the supervisor said)."""

    code: int | None = None  # exit code, when it exited
    signal: int | None = None  # the signal that ended it
    stopped: bool = False  # the stop was asked for (cancel, timeout, drain, lost lease)
    error: str | None = None  # it never started: not_found | not_executable | exec_failed
    message: str = ""

    @property
    def known(self) -> bool:
        return self.code is not None or self.signal is not None or self.error is not None

    def describe(self) -> str:
        if self.error is not None:
            return self.message
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        return f"exit code {self.code}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Sink(Protocol):
    """Where a running program's output goes (called from the job's thread)."""

    def lines(self, stream: str, lines: list[str]) -> None: ...

    def report(self, line: str) -> None: ...

    def tick(self) -> None: ...


class LineSplitter:
    """Bytes of one pipe into text lines: ``\\n`` ends a line, a trailing ``\\r`` is dropped and
    a line redrawn in place with ``\\r`` (a progress bar) keeps its last state; a line longer
    than ``limit`` bytes is cut there with a marker (the rest of it is skipped); bytes that are
    not UTF-8 become U+FFFD."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = b""
        self.skipping = False  # inside the rest of a line that was cut

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        out: list[str] = []
        while (end := self.buffer.find(b"\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 1:]
            if self.skipping:
                self.skipping = False
            else:
                out.append(self._text(line))
        if len(self.buffer) > self.limit and b"\r" in self.buffer:
            self.buffer = self.buffer[self.buffer.rfind(b"\r") + 1:]
        if len(self.buffer) > self.limit:
            if not self.skipping:
                out.append(self._text(self.buffer))
            self.buffer, self.skipping = b"", True
        return out

    def close(self) -> list[str]:
        """The last line, when the output did not end with a newline."""
        rest, self.buffer = self.buffer, b""
        return [self._text(rest)] if rest and not self.skipping else []

    def _text(self, line: bytes) -> str:
        line = line.rstrip(b"\r")
        if b"\r" in line:
            line = line[line.rfind(b"\r") + 1:]
        if len(line) > self.limit:
            return line[:self.limit].decode("utf-8", "replace") + TRUNCATED
        return line.decode("utf-8", "replace")


class Supervised:
    """``argv`` started under a supervisor (``start``), then followed to its end (``follow``)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], grace_s: float,
                 line_limit: int, report: bool = True) -> None:
        self.argv, self.cwd, self.env, self.grace_s = argv, cwd, env, grace_s
        self.line_limit = line_limit
        self.report = report
        self.exit = Exit()
        self.pid: int | None = None  # the program's (its process group's id)
        self.proc: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self._fds: dict[int, str] = {}  # our read ends: fd -> stdout | stderr | status | report
        self._status = b""

    def start(self) -> None:
        pipes = {name: os.pipe() for name in ("stdout", "stderr", "status", "report", "life")}
        report_w = pipes["report"][1] if self.report else -1
        life_r, self._lifeline = pipes["life"]
        passed = [life_r, pipes["status"][1]] + ([report_w] if self.report else [])
        env = {**self.env, "AIQ_REPORT_FD": str(REPORT_FD)} if self.report else self.env
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SUPERVISOR), str(life_r),
                 str(pipes["status"][1]), str(report_w), str(self.grace_s), str(os.getpid()),
                 "--", *self.argv],
                cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=pipes["stdout"][1],
                stderr=pipes["stderr"][1], pass_fds=passed, start_new_session=True)
        finally:
            for name in ("stdout", "stderr", "status", "report"):
                os.close(pipes[name][1])  # the children have them now
            os.close(life_r)
            if not self.report:
                os.close(pipes["report"][0])
        self._fds = {pipes[n][0]: n for n in ("stdout", "stderr", "status", "report")
                     if n != "report" or self.report}

    def follow(self, sink: Sink, check: Callable[[], None]) -> BaseException | None:
        """Read until the program ended and its output closed; ``check()`` is called every turn
        and whatever it (or the sink) raises stops the program and is returned."""
        splitters = {fd: LineSplitter(self.line_limit) for fd in self._fds}
        stop: BaseException | None = None
        stop_at = ended_at = 0.0
        with selectors.DefaultSelector() as selector:
            for fd in self._fds:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                try:
                    self._read(selector, splitters, sink)
                    sink.tick()
                    if stop is None:
                        check()
                except BaseException as exc:  # the job must stop: so must the program
                    if stop is None:
                        stop, stop_at = exc, time.monotonic()
                        self._tell(b"t")
                now = time.monotonic()
                if self.exit.known and not ended_at:
                    ended_at = now
                if ended_at and now - ended_at > DRAIN_AFTER_EXIT_S:
                    break
                if stop is not None and not self.exit.known and \
                        now - stop_at > self.grace_s + HARD_KILL_AFTER_S:
                    self.kill_hard()
                    break
        return stop

    def _read(self, selector: selectors.BaseSelector, splitters: dict[int, LineSplitter],
              sink: Sink) -> None:
        for key, _ in selector.select(POLL_S):
            fd = int(key.fd)
            try:
                data = os.read(fd, READ_BYTES)
            except OSError:
                data = b""
            name = self._fds[fd]
            lines = splitters[fd].feed(data) if data else splitters[fd].close()
            if not data:
                selector.unregister(fd)
                del self._fds[fd]
                os.close(fd)
            if name == "status":
                for line in lines:
                    self._status_line(line)
            elif name == "report":
                for line in lines:
                    sink.report(line)
            elif lines:
                sink.lines(name, lines)

    def _status_line(self, line: str) -> None:
        try:
            fact = json.loads(line)
        except ValueError:
            return
        if "pid" in fact:
            self.pid = int(fact["pid"])
        if "exit" in fact:
            self.exit.code = int(fact["exit"])
        if "signal" in fact:
            self.exit.signal = int(fact["signal"])
        if "error" in fact:
            self.exit.error, self.exit.message = str(fact["error"]), str(fact.get("message"))
        self.exit.stopped = self.exit.stopped or bool(fact.get("stopped"))

    def _tell(self, what: bytes) -> None:
        if self._lifeline is not None:
            with contextlib.suppress(OSError):
                os.write(self._lifeline, what)

    def kill_hard(self) -> None:
        """SIGKILL the program's group and the supervisor's: the supervisor did not answer."""
        for pgid in (self.pid, self.proc.pid if self.proc else None):
            if pgid:
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
        self.exit.signal, self.exit.stopped = self.exit.signal or signal.SIGKILL, True

    def close(self) -> None:
        """Let go of everything: closing the lifeline makes the supervisor stop what is left."""
        for fd in list(self._fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self._lifeline is not None:
            with contextlib.suppress(OSError):
                os.close(self._lifeline)
            self._lifeline = None
        if self.proc is not None:
            try:
                self.proc.wait(self.grace_s + HARD_KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                self.kill_hard()
                self.proc.wait()
