"""A command job's whole path on a worker, in its job thread (``CommandRunner.__call__``):

1. its working directory (workdir.py): under DATA_ROOT, or an archive from the artifact store;
2. its Python environment (uvenv.py): built once per lock or requirements, then cached;
3. its program, started under a supervisor in a process group of its own (process.py,
   supervisor.py), with an environment of the worker's safe variables, the job's ``env``, and
   ``AIQ_*``: ``AIQ_OUTPUT_DIR`` (its artifacts), ``AIQ_REPORT_FD`` (``aiq.report``),
   ``AIQ_JOB_ID``, ``AIQ_ATTEMPT``, ``AIQ_WORKER``;
4. meanwhile its stdout and stderr go line by line to the job's log stream in batches
   (logpump.py), its reports become progress events (reports.py), and the job's stop check
   (cancel, timeout, drain, lost lease) stops it: SIGTERM, then SIGKILL after
   COMMAND_KILL_GRACE_S;
5. its end: exit code 0 succeeds, with the files of ``$AIQ_OUTPUT_DIR`` uploaded as artifacts
   (outputs.py); ``EX_TEMPFAIL`` (75) is retried; anything else fails with the exit code (or
   the signal) and the tail of its stderr. Every log line is written before the job's final
   state, so a follower that sees the end has seen every line.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

from consumers.artifact_store import ArtifactStore
from consumers.command.logpump import LogPump
from consumers.command.outputs import fresh_output_dir, upload
from consumers.command.process import Exit, Supervised, signal_name
from consumers.command.reports import Reports
from consumers.command.uvenv import EnvBuilder, PythonEnv, spec_of
from consumers.command.workdir import working_dir
from consumers.errors import FailJob, RetryLater, TimedOut
from consumers.frameworks.base import JobContext
from consumers.progress import JobRun
from consumers.settings import WorkerSettings
from streams.consumer import QueueConsumer

# The worker's own uv project settings: a job never inherits them, whatever the passthrough.
WORKER_ONLY = frozenset({"UV_PROJECT_ENVIRONMENT", "UV_PROJECT", "UV_LOCKED", "UV_FROZEN",
                         "UV_NO_SYNC"})
EX_TEMPFAIL = 75  # sysexits.h: "try again later": the job is retried
STDERR_TAIL_LINES = 40
STDERR_TAIL_CHARS = 2000
SHIM_DIR = ".aiq-python"  # under COMMAND_ENV_ROOT: the ``aiq`` package a job imports
_HELPER = Path(__file__).with_name("report_helper.py")


class CommandFailed(FailJob):
    """The program failed; ``details`` (exit code or signal, stderr tail) join the error."""

    def __init__(self, message: str, code: str, details: dict[str, Any]) -> None:
        super().__init__(message, code=code)
        self.details = details


class CommandTempFail(RetryLater):
    """The program exited with EX_TEMPFAIL (75): retried with backoff, like any retryable
    error, within the job's max_retries."""

    code = "command_tempfail"

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class _Sink:
    """The running program's output: lines to the log (stderr's last ones kept), reports to
    progress."""

    def __init__(self, pump: LogPump, reports: Reports) -> None:
        self.pump, self.reports = pump, reports
        self.stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def lines(self, stream: str, lines: list[str]) -> None:
        self.pump.add(stream, lines)
        if stream == "stderr":
            self.stderr.extend(lines)

    def report(self, line: str) -> None:
        self.reports(line)

    def tick(self) -> None:
        self.pump.tick()

    def stderr_tail(self) -> str:
        return "\n".join(self.stderr)[-STDERR_TAIL_CHARS:]


class CommandRunner:
    """Runs the command jobs of one worker (``COMMAND_JOBS=true``)."""

    def __init__(self, settings: WorkerSettings, store: ArtifactStore, queue: QueueConsumer,
                 worker: str) -> None:
        self.settings, self.store, self.queue, self.worker = settings, store, queue, worker
        self.envs = EnvBuilder(settings.command_env_root, settings.command_uv,
                               settings.command_python, settings.command_env_build_timeout_s,
                               settings.command_kill_grace_s, settings.log_line_max_bytes)
        names = [n.strip() for n in settings.command_env_passthrough.split(",") if n.strip()]
        self._exact = frozenset(n for n in names if not n.endswith("*"))
        self._prefixes = tuple(n[:-1] for n in names if n.endswith("*"))
        self.shim = self._write_shim()

    def _write_shim(self) -> Path:
        """``<COMMAND_ENV_ROOT>/.aiq-python/aiq/__init__.py``: the report helper as the package
        ``aiq``, first on every job's PYTHONPATH (written atomically, once per worker)."""
        package = self.settings.command_env_root / SHIM_DIR / "aiq"
        package.mkdir(parents=True, exist_ok=True)
        tmp = package / f".__init__.{os.getpid()}.tmp"
        tmp.write_bytes(_HELPER.read_bytes())
        os.replace(tmp, package / "__init__.py")
        return Path(package.parent)

    def __call__(self, ctx: JobContext, run: JobRun) -> dict[str, Any]:
        """Executor-thread entry point (via ``execution.run_command``, which has begun the run
        and checked it): the job's result, or it raises how it ended."""
        pump = LogPump(lambda batch: self.queue.append_log(run.delivery, batch,
                                                           self.settings.log_max_lines),
                       run.loop, self.settings.log_flush_s, self.settings.log_batch_lines,
                       on_lost=lambda: setattr(run, "lost", True))
        sink = _Sink(pump, Reports(run, lambda text: pump.add("aiq", [text])))
        try:
            return self._run(ctx, run, pump, sink)
        finally:
            pump.close()  # every line is in Redis before the job's final state

    def _run(self, ctx: JobContext, run: JobRun, pump: LogPump, sink: _Sink) -> dict[str, Any]:
        msg, settings = ctx.message, self.settings
        assert msg.entrypoint
        with working_dir(msg.working_dir, settings.data_root, settings.command_work_root,
                         self.store, msg.job_id, settings.command_max_archive_bytes) as cwd:
            base = self._base_env(msg.env)
            spec = spec_of(cwd, msg.requirements, self.envs.python_id)
            pyenv = PythonEnv("worker") if spec is None else \
                self.envs.get(spec, cwd, base, pump.add, pump.tick, run.check)
            output = fresh_output_dir(self.store, msg.job_id)
            shown = shlex.join(msg.entrypoint).replace("\n", "\\n")
            pump.add("aiq", [f"running {_cut(shown)} on {self.worker} (attempt {ctx.attempt}, "
                             f"delivery {ctx.deliveries})"])
            started = time.monotonic()
            proc = Supervised(msg.entrypoint, cwd, self._child_env(base, pyenv, ctx, output),
                              settings.command_kill_grace_s, settings.log_line_max_bytes)
            proc.start()
            try:
                stop = proc.follow(sink, run.check)
            finally:
                proc.close()
            took = time.monotonic() - started
            pump.add("aiq", [f"{proc.exit.describe()} after {took:.1f} s"])
        if stop is not None:
            raise _stopped(stop, proc.exit, settings.command_kill_grace_s)
        self._raise_failure(proc.exit, msg.entrypoint[0], sink.stderr_tail())
        artifacts = upload(self.store, msg.job_id, settings.command_max_output_files,
                           lambda text: pump.add("aiq", [text]))
        return _result(msg.job_id, proc.exit, took, artifacts, sink.reports, pyenv)

    @staticmethod
    def _raise_failure(exit: Exit, program: str, tail: str) -> None:
        """Nothing when the program exited 0; else how it failed."""
        if exit.error is not None:
            code = "command_not_found" if exit.error == "not_found" else \
                "command_not_executable"
            raise FailJob(f"the entrypoint could not be started: {exit.message} (looked up on "
                          "the PATH of the job's environment)", code=code)
        details: dict[str, Any] = {"stderr_tail": tail}
        shown = f"; the end of its stderr:\n{tail}" if tail else " (nothing on stderr)"
        if exit.signal is not None:
            details["signal"] = signal_name(exit.signal)
            raise CommandFailed(f"{program} was killed by {signal_name(exit.signal)}{shown}",
                                code="command_killed", details=details)
        if exit.code == 0:
            return
        details["exit_code"] = exit.code
        if exit.code == EX_TEMPFAIL:
            raise CommandTempFail(f"{program} exited with {EX_TEMPFAIL} (EX_TEMPFAIL: try "
                                  f"again later){shown}", details)
        raise CommandFailed(f"{program} failed with exit code {exit.code}{shown}",
                            code="command_failed", details=details)

    def _base_env(self, job_env: dict[str, str]) -> dict[str, str]:
        """The worker's variables that COMMAND_ENV_PASSTHROUGH names (never those that point
        uv at the worker's own project: a job's ``uv sync`` or ``uv run`` would rewrite the
        worker's environment), then the job's own."""
        env = {k: v for k, v in os.environ.items()
               if (k in self._exact or k.startswith(self._prefixes)) and k not in WORKER_ONLY}
        return {**env, **job_env}

    def _child_env(self, base: dict[str, str], pyenv: PythonEnv, ctx: JobContext,
                   output: Path) -> dict[str, str]:
        env = dict(base)
        env["PATH"] = f"{pyenv.bin_dir}{os.pathsep}{base.get('PATH', os.defpath)}"
        env.pop("PYTHONHOME", None)
        if pyenv.path is not None:
            env["VIRTUAL_ENV"] = str(pyenv.path)
        paths = [str(self.shim), *filter(None, [base.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONUNBUFFERED", "1")  # lines show as they are printed
        env.update(AIQ_JOB_ID=ctx.message.job_id, AIQ_ATTEMPT=str(ctx.attempt),
                   AIQ_DELIVERY=str(ctx.deliveries), AIQ_WORKER=self.worker,
                   AIQ_WORKER_TYPE=self.settings.worker_type, AIQ_OUTPUT_DIR=str(output))
        gpu = ctx.extra.get("gpu_index")
        if gpu is not None:  # GPU admission gave it this device
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        return env


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def _stopped(stop: BaseException, exit: Exit, grace_s: float) -> BaseException:
    """What the job's stop check raised, told how the program was stopped."""
    if isinstance(stop, TimedOut):
        how = (f"SIGTERM, then SIGKILL after {grace_s:g} s" if exit.signal == signal.SIGKILL
               else "SIGTERM")
        return TimedOut(f"{stop}; the command was stopped with {how}")
    return stop


def _result(job_id: str, exit: Exit, took: float, artifacts: list[str], reports: Reports,
            pyenv: PythonEnv) -> dict[str, Any]:
    result: dict[str, Any] = {
        "exit_code": exit.code, "duration_s": round(took, 3), "artifacts": artifacts,
        "metrics": reports.metrics, "reports": reports.count, "environment": pyenv.describe(),
        "framework": "command"}
    if artifacts:
        result["artifact_dir"] = job_id  # in the artifact store: <job_id>/output/<path>
    for name in ("step", "steps", "epoch", "epochs"):
        if name in reports.last:
            result[name] = reports.last[name]
    return result
