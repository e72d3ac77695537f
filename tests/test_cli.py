"""The ``aiq`` command line, in process (typer's CliRunner)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiq.cli import app
from aiq.envs import VENVS_DIR_VAR
from aiq.redis_server import free_port

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # rich fits the table to the terminal; keep rows on one line


def _row(output: str, worker_type: str) -> str:
    return next(line for line in output.splitlines() if line.split()[:1] == [worker_type])


@pytest.fixture
def no_type_envs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-type environment (.venvs/<extra>) exists: only the main one's types are there."""
    monkeypatch.setenv(VENVS_DIR_VAR, str(tmp_path / "venvs"))


@pytest.mark.usefixtures("no_type_envs")
def test_types_lists_installed_types_and_install_commands() -> None:
    result = runner.invoke(app, ["types"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "yes 1.3" in _row(result.output, "sklearn")
    assert "yes" in _row(result.output, "diagnostic")
    torch_row = _row(result.output, "pytorch-2.1")
    assert " no " in torch_row
    assert "aiq env install pytorch-2.1" in torch_row


@pytest.mark.parametrize(
    ("args", "env"),
    [(["worker", "--type", "unknown"], {}), (["worker"], {"WORKER_TYPE": None})],
    ids=["unknown-type", "no-type"],
)
def test_worker_without_a_known_type_exits_2_with_one_line(
    args: list[str], env: dict[str, str | None]
) -> None:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("aiq worker: ")
    assert "sklearn" in lines[0]  # lists the known types / points at `aiq types`


@pytest.mark.usefixtures("no_type_envs")
def test_up_refuses_unknown_and_uninstalled_types_before_starting_anything() -> None:
    result = runner.invoke(app, ["up", "--types", "nope"])
    assert result.exit_code == 2
    assert "unknown worker type nope" in result.output

    result = runner.invoke(app, ["up", "--types", "sklearn,pytorch-2.1"])
    assert result.exit_code == 2
    assert "pytorch-2.1: not installed — aiq env install pytorch-2.1" in result.output


def test_health_against_nothing_exits_1() -> None:
    result = runner.invoke(app, ["health", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert result.output.startswith("unhealthy: ")


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_health_answers_0_when_health_is_200(health_server: str) -> None:
    result = runner.invoke(app, ["health", "--url", health_server + "/"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("healthy: ")
