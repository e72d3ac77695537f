"""A command job's own Python environment, built with uv once and then reused.

Which environment a job runs in, first that applies:

* ``requirements`` in the request: a venv with them installed (``uv pip install``), keyed by
  the sorted requirement strings and the worker's Python (local paths are keyed by their name,
  not their contents: name a new file to get a new environment);
* ``pyproject.toml`` and ``uv.lock`` in its working directory: ``uv sync --frozen
  --no-install-project`` into a venv keyed by the lock's bytes;
* else none: the program runs with the worker's own Python first on PATH.

Environments live under ``COMMAND_ENV_ROOT/<key>``. Building one is concurrency-safe: an
exclusive file lock per key (``flock``; two jobs of one worker, or two workers sharing the
directory, build it once: the second waits, then finds it), the build goes to a temporary
directory beside it, ``--relocatable``, and becomes ``<key>`` by one atomic rename once complete
(with a ``.aiq-env.json`` marker inside). A build that dies half way leaves only a temporary
directory, removed by the next build of its key. uv runs under the same supervisor as the job
(its output goes to the job's log as ``aiq`` lines; cancel and timeout stop it); a failed build
fails the job with ``env_build_failed`` and the tail of uv's output.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex

from consumers.command.process import Supervised
from consumers.errors import FailJob

MARKER = ".aiq-env.json"
LOCK_POLL_S = 0.1
TAIL_LINES = 30


@dataclass(frozen=True, slots=True)
class EnvSpec:
    kind: str  # requirements | lock
    key: str
    requirements: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PythonEnv:
    """Where the program's ``python`` comes from."""

    kind: str  # worker | requirements | lock
    path: Path | None = None  # the venv (None: the worker's own)
    key: str | None = None
    cached: bool = False  # built before this job

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin" if self.path is not None else Path(sys.executable).parent

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind}
        if self.key is not None:
            out.update(key=self.key, cached=self.cached)
        return out


def spec_of(workdir: Path, requirements: list[str] | None, python: str) -> EnvSpec | None:
    """The environment a job asks for (None: the worker's own)."""
    if requirements:
        text = "\n".join(sorted(requirements))
        return EnvSpec("requirements", _key(b"requirements", text.encode(), python),
                       tuple(requirements))
    lock = workdir / "uv.lock"
    if (workdir / "pyproject.toml").is_file() and lock.is_file():
        return EnvSpec("lock", _key(b"lock", lock.read_bytes(), python))
    return None


def _key(kind: bytes, content: bytes, python: str) -> str:
    digest = hashlib.sha256(kind + b"\0" + content + b"\0" + python.encode())
    return f"{kind.decode()}-{digest.hexdigest()[:32]}"


Lines = Callable[[str, list[str]], None]  # (stream, lines) into the job's log


class EnvBuilder:
    def __init__(self, root: Path, uv: str, python: str | None, timeout_s: float,
                 grace_s: float, line_limit: int) -> None:
        self.root = root
        self.uv = uv
        self.python = python  # None: the worker's own for requirements, uv's choice for locks
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.line_limit = line_limit

    @property
    def python_id(self) -> str:
        return self.python or f"{sys.executable} {sys.version}"

    def get(self, spec: EnvSpec, workdir: Path, env: dict[str, str], out: Lines,
            tick: Callable[[], None], check: Callable[[], None]) -> PythonEnv:
        """The built environment of ``spec``: found, or built now (waiting for a build of the
        same key elsewhere to end first)."""
        final = self.root / spec.key
        if (final / MARKER).is_file():
            return PythonEnv(spec.kind, final, spec.key, cached=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked(spec.key, out, tick, check):
            if (final / MARKER).is_file():  # built by whoever held the lock
                return PythonEnv(spec.kind, final, spec.key, cached=True)
            self._build(spec, final, workdir, env, out, tick, check)
        return PythonEnv(spec.kind, final, spec.key, cached=False)

    @contextlib.contextmanager
    def _locked(self, key: str, out: Lines, tick: Callable[[], None],
                check: Callable[[], None]) -> Iterator[None]:
        with open(self.root / f".{key}.lock", "a+b") as fh:
            said = False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not said:
                        out("aiq", [f"waiting for another build of environment {key}"])
                        said = True
                    tick()
                    check()
                    time.sleep(LOCK_POLL_S)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _build(self, spec: EnvSpec, final: Path, workdir: Path, env: dict[str, str], out: Lines,
               tick: Callable[[], None], check: Callable[[], None]) -> None:
        for stale in self.root.glob(f".{spec.key}.*.tmp"):  # a build that died half way
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.root / f".{spec.key}.{os.getpid()}.{token_hex(4)}.tmp"
        out("aiq", [f"building environment {spec.key} with uv ({spec.kind})"])
        started = time.monotonic()
        try:
            for argv, extra in self._steps(spec, tmp, workdir):
                self._uv(argv, workdir, {**env, **extra}, out, tick, check, started)
            (tmp / MARKER).write_text(json.dumps({
                "key": spec.key, "kind": spec.kind, "requirements": list(spec.requirements),
                "python": self.python_id, "built_at": time.time()}))
            os.rename(tmp, final)  # atomic: the environment appears complete, or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        out("aiq", [f"environment {spec.key} built in {time.monotonic() - started:.1f} s"])

    def _steps(self, spec: EnvSpec, tmp: Path, workdir: Path
               ) -> list[tuple[list[str], dict[str, str]]]:
        python = self.python or (sys.executable if spec.kind == "requirements" else None)
        venv = [self.uv, "venv", "--relocatable", *(["--python", python] if python else []),
                str(tmp)]
        if spec.kind == "requirements":
            install = [self.uv, "pip", "install", "--python", str(tmp / "bin" / "python"), "--",
                       *spec.requirements]
            return [(venv, {}), (install, {})]
        sync = [self.uv, "sync", "--frozen", "--no-install-project", "--project", str(workdir)]
        return [(venv, {}), (sync, {"UV_PROJECT_ENVIRONMENT": str(tmp)})]

    def _uv(self, argv: list[str], workdir: Path, env: dict[str, str], out: Lines,
            tick: Callable[[], None], check: Callable[[], None], started: float) -> None:
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def lines(_stream: str, got: list[str]) -> None:
            tail.extend(got)
            out("aiq", got)

        def within() -> None:
            check()
            if time.monotonic() - started > self.timeout_s:
                raise FailJob(f"building the job's environment took more than "
                              f"{self.timeout_s:g} s (COMMAND_ENV_BUILD_TIMEOUT_S)",
                              code="env_build_failed")

        proc = Supervised(argv, workdir, env, self.grace_s, self.line_limit, report=False)
        proc.start()
        try:
            stop = proc.follow(_Collect(lines, tick), within)
        finally:
            proc.close()
        if stop is not None:
            raise stop
        if proc.exit.error is not None:
            raise FailJob(f"cannot run uv ({proc.exit.message}); set COMMAND_UV to its path",
                          code="env_build_failed")
        if proc.exit.code != 0:
            shown = "\n".join(tail)
            raise FailJob(f"building the job's environment failed: {argv[1]} ended with "
                          f"{proc.exit.describe()}:\n{shown}", code="env_build_failed")


class _Collect:
    """A uv run's output: to ``out`` (the job's log), as the job's own output would."""

    def __init__(self, out: Lines, tick: Callable[[], None]) -> None:
        self.out, self._tick = out, tick

    def lines(self, stream: str, lines: list[str]) -> None:
        self.out(stream, lines)

    def report(self, line: str) -> None:
        return None

    def tick(self) -> None:
        self._tick()
