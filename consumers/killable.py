"""Run code that does not come back to Python for a long time (one native ``fit`` call) in a
child process, so that cancel, timeout and a worker's drain stop it within ``POLL_S``.

A job thread cannot be stopped from outside; a process can. The child comes from a fork server
started once per worker process (with ``PRELOAD`` imported, so a fork costs milliseconds, not an
import); arguments and the result travel pickled over a pipe. While the child runs, the job's
thread polls the pipe and calls the job's stop check (``check_of(progress)``): when it raises,
the child is SIGKILLed and the exception goes on. The child relays ``progress`` calls over the
same pipe. A child dies with its parent: the fork server exits when the worker does (its pipe
closes), and each child has ``PR_SET_PDEATHSIG`` = SIGKILL towards the fork server.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing as mp
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import Any

from consumers.frameworks.base import Progress, check_of

POLL_S = 0.2
PRELOAD = ["numpy", "sklearn.ensemble", "sklearn.linear_model", "sklearn.pipeline",
           "sklearn.preprocessing", "sklearn.svm", "consumers.killable"]

class ChildDied(RuntimeError):
    """The child process ended without an answer (killed by the kernel's OOM killer, say)."""


@functools.cache
def _fork_server() -> ForkServerContext:
    ctx = mp.get_context("forkserver")  # one per process, started at its first Process
    assert isinstance(ctx, ForkServerContext)
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _die_with_parent() -> None:
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    _die_with_parent()

    def relay(stage: str, **fields: Any) -> None:
        conn.send(("progress", stage, fields))

    try:
        value = fn(*args, relay)
    except BaseException as exc:  # every failure goes back to the job thread
        try:
            conn.send(("error", exc))
        except Exception:  # an exception that does not pickle: its text then
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        return
    conn.send(("done", value))


def run(fn: Callable[..., Any], args: tuple[Any, ...], progress: Progress) -> Any:
    """``fn(*args, progress)`` in a child process; its return value (pickled back) or its
    exception. ``fn`` must be a module-level function; its ``progress`` takes a stage and
    keyword fields (relayed to the job's ``progress``)."""
    ctx = _fork_server()
    check = check_of(progress)
    ours, theirs = ctx.Pipe(duplex=True)
    child = ctx.Process(target=_child, args=(theirs, fn, args), daemon=True,
                        name="aiq-killable")
    child.start()
    theirs.close()
    try:
        while True:
            check()
            if not ours.poll(POLL_S):
                if not child.is_alive() and not ours.poll(0):
                    raise ChildDied(f"the job's child process ended with exit code "
                                    f"{child.exitcode} and no answer")
                continue
            try:
                kind, *rest = ours.recv()
            except EOFError:
                continue  # the child is gone: the next turn says how
            if kind == "progress":
                stage, fields = rest
                progress(stage, **fields)
            elif kind == "error":
                raise rest[0]
            else:
                return rest[0]
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        ours.close()
