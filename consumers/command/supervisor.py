"""The supervisor of one command: a tiny process between the worker and the job's program, so
that nothing the program starts outlives the job or the worker.

Run by the worker (``consumers/command/process.py``) as
``python -I -S supervisor.py <lifeline fd> <status fd> <report fd> <grace s> <worker pid> --
argv...``, in a session of its own, with the program's cwd, environment, stdout and stderr. The
report pipe (``-1``: none) reaches the program as fd 3 (``AIQ_REPORT_FD=3``: one digit, so even
``sh`` can write to it with ``>&3``). Standard library
only, no import of aiq: it starts in milliseconds and works whatever the job's environment is.

* The program runs in its own process group (``setpgid``), with ``PR_SET_PDEATHSIG`` = SIGKILL
  towards the supervisor. The supervisor is a child subreaper (``PR_SET_CHILD_SUBREAPER``): a
  grandchild whose parent exits is re-parented to it, not to init, so it can still be found
  (``descendants``) even if it left the group (``setsid``).
* The worker holds the write end of the lifeline pipe; nobody else does. A byte ``t`` asks for
  a stop (SIGTERM to the group and every descendant, SIGKILL after the grace period), ``k`` for
  a kill now. End of file means the worker is gone (SIGKILLed, crashed: the kernel closed its
  end): the supervisor stops everything the same way and exits. ``PR_SET_PDEATHSIG`` = SIGTERM
  on the supervisor itself is the second trigger.
* When the program exits by itself, whatever it left running is stopped too (SIGTERM, SIGKILL
  after at most 2 s), so a job never leaves a process behind.
* On the status fd it writes one JSON line per fact: ``{"pid": n}`` once the program started,
  then ``{"exit": code}`` or ``{"signal": n}`` (with ``"stopped": true`` when the stop was
  asked for), or ``{"error": "not_found" | "not_executable" | "exec_failed", "message": ...}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_GRACE_S = 2.0
POLL_S = 0.05
REPORT_FD = 3


def _prctl(option: int, value: int) -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc), children before grandchildren."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(b")", 1)[1].split()[1])
    out: list[int] = []
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - set(out)
        out += sorted(frontier)
    return out


class Supervisor:
    def __init__(self, lifeline: int, status: int, report: int, grace_s: float,
                 argv: list[str]) -> None:
        self.lifeline, self.status, self.report = lifeline, status, report
        self.grace_s, self.argv = grace_s, argv
        self.pid = 0
        self.code: int | None = None  # the program's wait status, once reaped
        self.stopping = False
        self.asked = False  # the stop was asked for (by the worker, or by its death)

    def say(self, **fact: object) -> None:
        with contextlib.suppress(OSError):  # OSError: the worker is gone, nobody to tell
            os.write(self.status, (json.dumps(fact) + "\n").encode())

    def start(self) -> bool:
        """Fork and exec the program; False (and the reason said) when it could not start."""
        ready_r, ready_w = os.pipe()  # close-on-exec: EOF = exec succeeded
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, until exec
            try:
                os.close(ready_r)
                if ready_w == REPORT_FD:
                    ready_w = os.dup(ready_w)
                if self.report >= 0 and self.report != REPORT_FD:
                    os.dup2(self.report, REPORT_FD)
                    os.close(self.report)
                os.setpgid(0, 0)
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE,
                            signal.SIGXFSZ):  # Python ignores SIGPIPE and SIGXFSZ
                    signal.signal(sig, signal.SIG_DFL)
                os.execvp(self.argv[0], self.argv)
            except OSError as exc:
                os.write(ready_w, f"{exc.errno}".encode())
            finally:
                os._exit(127)
        os.close(ready_w)
        self.pid = pid
        with os.fdopen(ready_r, "rb") as fh:
            failed = fh.read()
        if failed:
            self.reap_all()
            code = int(failed)
            kind = {errno.ENOENT: "not_found", errno.EACCES: "not_executable",
                    errno.ENOEXEC: "not_executable"}.get(code, "exec_failed")
            self.say(error=kind, message=f"{self.argv[0]}: {os.strerror(code)}")
            return False
        self.say(pid=pid)
        return True

    def reap_all(self) -> None:
        """Collect every exited child (the program, and orphans re-parented to us)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.code = status

    def signal_all(self, sig: int) -> None:
        """``sig`` to the program's group and to every descendant (whatever group it is in)."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, sig)
        for pid in descendants(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)

    def stop(self, grace_s: float) -> None:
        """SIGTERM to everything, then SIGKILL to what is left after ``grace_s``."""
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.reap_all()
            if self.code is not None and not descendants(os.getpid()):
                return
            time.sleep(POLL_S)
        for _ in range(50):  # bounded: a fork bomb cannot keep us here
            self.signal_all(signal.SIGKILL)
            time.sleep(POLL_S / 5)
            self.reap_all()
            if self.code is not None and not descendants(os.getpid()):
                return

    def command(self) -> None:
        """What the worker says on the lifeline (EOF: it is gone)."""
        try:
            data = os.read(self.lifeline, 64)
        except OSError:
            data = b""
        if not data or b"k" in data or (b"t" in data and not self.stopping):
            self.asked = True
            self.stop(0.0 if b"k" in data else self.grace_s)

    def run(self) -> int:
        if not self.start():
            return 0
        while self.code is None:
            ready, _, _ = select.select([self.lifeline], [], [], POLL_S)
            if ready:
                self.command()
            self.reap_all()
        if descendants(os.getpid()):  # left behind by a program that exited by itself
            self.stop(min(self.grace_s, LEFTOVER_GRACE_S))
        status = self.code
        if os.WIFSIGNALED(status):
            self.say(signal=os.WTERMSIG(status), stopped=self.asked)
        else:
            self.say(exit=os.waitstatus_to_exitcode(status), stopped=self.asked)
        return 0


def main(args: list[str]) -> int:
    lifeline, status, report = int(args[0]), int(args[1]), int(args[2])
    grace_s, worker = float(args[3]), int(args[4])
    argv = args[args.index("--") + 1:]
    for fd in (lifeline, status):
        os.set_inheritable(fd, False)  # the program gets neither
    supervisor = Supervisor(lifeline, status, report, grace_s, argv)

    def worker_gone(_sig: int, _frame: object) -> None:  # PR_SET_PDEATHSIG, or a stray TERM
        if not supervisor.stopping and supervisor.pid:
            supervisor.asked = True
            supervisor.stop(grace_s)

    signal.signal(signal.SIGTERM, worker_gone)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C at the worker's terminal is its own
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != worker:  # the worker died before the line above
        return 0
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
