"""``aiq up``: a whole local deployment from one command.

Redis (reused when one answers at the URL, else started here with AOF under
``<data-dir>/redis``), the gateway, and one worker per worker type installed here (in this
environment, or in the type's own ``.venvs/<extra>`` whose python then runs it; see
:mod:`aiq.envs`), each a child process watched by a small :class:`Supervisor`. Ctrl-C or
SIGTERM stops them in order: workers first (they drain), then the gateway, then the Redis this
command started. A child that dies on its own stops the rest, with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import httpx

from aiq.envs import EnvError, ensure_current, is_current
from aiq.installed import Availability, catalogue_availability
from aiq.redis_server import HOST as REDIS_HOST
from aiq.redis_server import RedisServer, RedisServerError, redis_reachable
from schemas.catalogue import CATALOGUE, Device, WorkerType

__all__ = ["DEFAULT_REDIS_URL", "Supervisor", "UpError", "UpOptions", "run"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
POLL_S = 0.1
READY_TIMEOUT_S = 120.0  # a torch or tensorflow worker may take a while to import
GATEWAY_STOP_TIMEOUT_S = 10.0
WORKER_STOP_MARGIN_S = 15.0  # on top of the workers' own shutdown grace
SIGNAL_DEBOUNCE_S = 1.0


class UpError(Exception):
    """``aiq up`` cannot go on; the message is what the user reads, ``code`` the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class UpOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str = DEFAULT_REDIS_URL
    data_dir: Path = Path(".aiq")
    types: Sequence[str] | None = None  # None: every type installed here


# --- supervision ---------------------------------------------------------------------------


@dataclass(slots=True)
class Child:
    name: str
    role: str  # "gateway" or "worker": the unit of ordered shutdown
    process: subprocess.Popen[bytes]


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """SIGTERM this child when ``aiq up`` dies without cleaning up (e.g. SIGKILL); Linux only."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Supervisor:
    """Child processes in their own process groups, watched, and stopped role by role.

    Children do not share the terminal's process group, so a Ctrl-C reaches only this process,
    which then stops them in order. A second Ctrl-C / SIGTERM (a moment after the first: one
    keypress may arrive twice, e.g. directly and forwarded by ``uv run``) kills what still runs.
    """

    children: list[Child] = field(default_factory=list)
    first_signal_at: float | None = None
    forced: bool = False

    @property
    def stop_requested(self) -> bool:
        return self.first_signal_at is not None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.first_signal_at is None:
            self.first_signal_at = now
        elif now - self.first_signal_at > SIGNAL_DEBOUNCE_S:
            self.forced = True

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def spawn(self, name: str, role: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        process = subprocess.Popen(
            list(argv), env=dict(env), stdin=subprocess.DEVNULL, process_group=0,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - aiq up starts no threads
        )
        child = Child(name, role, process)
        self.children.append(child)
        return child

    def exited(self) -> Child | None:
        """The first child that is no longer running, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def watch(self) -> Child | None:
        """Block until a stop is requested (None) or a child exits (that child)."""
        while not self.stop_requested:
            child = self.exited()
            if child is not None:
                return child
            time.sleep(POLL_S)
        return None

    def stop(self, role: str, timeout: float) -> list[str]:
        """SIGTERM the running children of ``role``, wait up to ``timeout`` seconds, then
        SIGKILL the stragglers (at once after a second signal). Returns the killed names."""
        group = [c for c in self.children if c.role == role and c.process.poll() is None]
        for child in group:
            child.process.terminate()
        deadline = time.monotonic() + timeout
        while any(c.process.poll() is None for c in group):
            if time.monotonic() > deadline or self.forced:
                break
            time.sleep(POLL_S)
        killed = [c for c in group if c.process.poll() is None]
        for child in killed:
            child.process.kill()
            child.process.wait()
        return [c.name for c in killed]


# --- Redis ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT while spawning a child we cannot put in its own process group: it inherits
    the mask, so the terminal's Ctrl-C (sent to the whole foreground group) does not stop it
    before the workers have drained. A Ctrl-C meanwhile is delivered when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ensure_redis(url: str, data_dir: Path) -> tuple[str, RedisServer | None]:
    """The Redis URL to use and the server started for it (None when one already answered)."""
    if redis_reachable(url):
        return url, None
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in LOCAL_HOSTS:
        raise UpError(f"no Redis answers at {url}; aiq up starts one only for "
                      "redis://localhost:<port> URLs")
    if parts.password:
        raise UpError(f"no Redis answers at {url}; aiq up does not start password-protected "
                      "servers: start that Redis yourself")
    try:
        server = RedisServer(port=parts.port or 6379, data_dir=data_dir / "redis",
                             appendonly=True)
        with _sigint_blocked():
            server.start()
    except RedisServerError as exc:
        raise UpError(f"cannot start Redis: {exc}") from None
    netloc = f"{REDIS_HOST}:{server.port}"
    return urlunsplit(("redis", netloc, parts.path or "/0", parts.query, "")), server


# --- children ------------------------------------------------------------------------------


def select_types(requested: Sequence[str] | None
                 ) -> tuple[list[Availability], list[Availability]]:
    """The worker types to start (each with the python that runs it: this environment's or the
    type's own ``.venvs/<extra>``) and, when none were requested, those skipped here."""
    found = catalogue_availability()
    if requested is None:
        return [a for a in found if a.ok], [a for a in found if not a.ok]
    unknown = [name for name in requested if name not in CATALOGUE]
    if unknown:
        known = ", ".join(CATALOGUE)
        raise UpError(f"unknown worker type {', '.join(unknown)}; known: {known}", code=2)
    by_name = {a.worker_type.name: a for a in found}
    missing = [by_name[name].hint for name in requested if not by_name[name].ok]
    if missing:
        raise UpError("cannot run " + "; ".join(missing), code=2)
    return [by_name[name] for name in dict.fromkeys(requested)], []


def _base_env(redis_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATA_ROOT": str(data_dir / "data"),
        "ARTIFACT_ROOT": str(data_dir / "artifacts"),
        "PYTHONUNBUFFERED": "1",
    }


def _worker_env(base: Mapping[str, str], wt: WorkerType) -> dict[str, str]:
    return {
        **base,
        # console lines for a person at a terminal, JSON lines when the output goes elsewhere
        "LOG_JSON": base.get("LOG_JSON", "false" if sys.stderr.isatty() else "true"),
        "WORKER_TYPE": wt.name,
        "MODEL_FRAMEWORK": wt.framework,
        "USE_GPU": "true" if wt.device is Device.GPU else "false",
        # Several workers on one host cannot share a METRICS_PORT someone exported: off here.
        "METRICS_PORT": "0",
    }


def _probe_url(host: str, port: int) -> str:
    probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{probe}]:{port}" if ":" in probe else f"http://{probe}:{port}"


def _worker_grace_s() -> float:
    from consumers.settings import WorkerSettings

    try:  # SHUTDOWN_GRACE_S from the environment, as the workers read it
        settings = WorkerSettings(worker_type="diagnostic", model_framework="diagnostic")
    except ValueError:  # a bad value: the workers themselves report it
        return 30.0
    return settings.shutdown_grace_s


def _missing(client: httpx.Client, worker_pids: set[int]) -> str | None:
    """What is not ready yet: the gateway, or workers (by pid) not yet registered; None: all."""
    try:
        if client.get("/health").status_code != 200:
            return "the gateway (GET /health)"
        workers = client.get("/workers").raise_for_status().json()["workers"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return "the gateway"
    waiting = worker_pids - {w.get("pid") for w in workers}
    return f"{len(waiting)} worker(s) to register" if waiting else None


def wait_ready(api: str, supervisor: Supervisor, worker_pids: set[int], timeout: float) -> None:
    """Poll until the gateway is healthy and lists every worker we started; stop early on a
    signal or a dead child."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=api, timeout=1.0) as client:
        while not supervisor.stop_requested and supervisor.exited() is None:
            missing = _missing(client, worker_pids)
            if missing is None:
                return
            if time.monotonic() > deadline:
                raise UpError(f"still waiting for {missing} after {timeout:.0f}s")
            time.sleep(POLL_S)


def _exit_reason(process: subprocess.Popen[bytes]) -> str:
    code = process.returncode
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


# --- the command ---------------------------------------------------------------------------


@dataclass
class _Up:
    options: UpOptions
    echo: Callable[[str], None]
    supervisor: Supervisor = field(default_factory=Supervisor)
    redis: RedisServer | None = None

    def run(self) -> int:
        data_dir = self.options.data_dir.expanduser().resolve()
        types, skipped = select_types(self.options.types)
        for availability in skipped:
            self.echo(f"aiq up: skipping {availability.hint}")
        types = [a for a in types if self._current(a)]
        for sub in ("data", "artifacts"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        redis_url, self.redis = ensure_redis(self.options.redis_url, data_dir)
        if self.supervisor.stop_requested:
            return 0
        base = _base_env(redis_url, data_dir)
        api = _probe_url(self.options.host, self.options.port)
        gateway_env = {**base, "HOST": self.options.host, "PORT": str(self.options.port)}
        self.supervisor.spawn("gateway", "gateway", [sys.executable, "-m", "gateway"],
                              gateway_env)
        workers = [
            self.supervisor.spawn(f"worker {a.worker_type.name}", "worker",
                                  [str(a.python or sys.executable), "-m", "consumers"],
                                  _worker_env(base, a.worker_type))
            for a in types
        ]
        wait_ready(api, self.supervisor, {w.process.pid for w in workers}, READY_TIMEOUT_S)
        if not self.supervisor.stop_requested and self.supervisor.exited() is None:
            self._banner(api, redis_url, data_dir, types)
        return self._watch()

    def _current(self, found: Availability) -> bool:
        """Bring the type's own environment up to date with uv.lock (a new aiq may need a new
        dependency); False, with a line saying why, when that fails."""
        extra = found.worker_type.extra
        if found.env is None or extra is None or is_current(extra):
            return True
        self.echo(f"aiq up: updating {found.env.name} (uv.lock changed since it was made)")
        try:
            result = ensure_current(extra, lambda line: None)
        except EnvError as exc:
            self.echo(f"aiq up: skipping {found.worker_type.name}: {exc}")
            return False
        if result is not None and not result.ok:
            self.echo(f"aiq up: skipping {found.worker_type.name}: {result.problem}")
            return False
        return True

    def _banner(self, api: str, redis_url: str, data_dir: Path, types: list[Availability]
                ) -> None:
        started = f"started by aiq up, AOF in {data_dir / 'redis'}" if self.redis else "existing"
        self.echo(f"aiq up: API      {api}  (OpenAPI docs at {api}/docs)")
        self.echo(f"aiq up: Redis    {redis_url}  ({started})")
        workers = ", ".join(_describe(a) for a in types) or "none"
        self.echo(f"aiq up: workers  {workers}")
        self.echo(f"aiq up: data     {data_dir / 'data'}  artifacts {data_dir / 'artifacts'}")
        self.echo("aiq up: press Ctrl-C to stop")

    def _watch(self) -> int:
        died = self.supervisor.watch()
        if died is None:
            self.echo("aiq up: stopping (workers drain first)")
            return 0
        self.echo(f"aiq up: {died.name} exited unexpectedly ({_exit_reason(died.process)}); "
                  "stopping the rest")
        return 1

    def shutdown(self) -> None:
        killed = self.supervisor.stop("worker", _worker_grace_s() + WORKER_STOP_MARGIN_S)
        killed += self.supervisor.stop("gateway", GATEWAY_STOP_TIMEOUT_S)
        if killed:
            self.echo(f"aiq up: killed {', '.join(killed)} (did not stop in time)")
        if self.redis is not None:
            self.redis.stop()
            self.echo("aiq up: stopped the Redis it started")


def _describe(found: Availability) -> str:
    """``pytorch-2.0 (torch 2.0.1, .venvs/pytorch_2_0)``; main-environment types by name."""
    if found.env is None:
        return found.worker_type.name
    return (f"{found.worker_type.name} ({found.worker_type.module} {found.installed_version}, "
            f"{found.env})")


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # in order with the children's logs (stderr)


def run(options: UpOptions, echo: Callable[[str], None] = _echo) -> int:
    """Run ``aiq up`` until Ctrl-C / SIGTERM (exit 0) or a child's death (exit 1)."""
    up = _Up(options, echo)
    with up.supervisor.handling_signals():
        try:
            return up.run()
        except UpError as exc:
            echo(f"aiq up: {exc}")
            return exc.code
        finally:
            up.shutdown()
