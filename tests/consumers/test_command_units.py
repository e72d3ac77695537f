"""The small parts of command jobs on their own: output split into lines (long lines cut with a
marker, non-UTF-8 replaced, progress bars redrawn with \\r), reports turned into progress,
routing by COMMAND_WORKER_TYPES, and SSE ids with two positions."""

from __future__ import annotations

from typing import Any

import pytest

from aiq.sse import event_id_key
from consumers.command.process import TRUNCATED, LineSplitter
from consumers.command.reports import Reports
from schemas.catalogue import RoutingError
from schemas.commands import CommandsDisabled, route_command


def test_lines_are_split_across_reads_and_in_order() -> None:
    lines = LineSplitter(100)
    assert lines.feed(b"one\ntw") == ["one"]
    assert lines.feed(b"o\nthree\r\n") == ["two", "three"]
    assert lines.feed(b"no newline at the end") == []
    assert lines.close() == ["no newline at the end"]


def test_a_long_line_is_cut_with_a_marker_and_its_rest_skipped() -> None:
    lines = LineSplitter(10)
    got = lines.feed(b"x" * 25) + lines.feed(b"y" * 25 + b"\nnext\n")
    assert got[0].endswith(TRUNCATED) and got[0].startswith("x" * 10) and "yy" not in got[0]
    assert got[1:] == ["next"]


def test_bytes_that_are_not_utf8_are_replaced() -> None:
    assert LineSplitter(100).feed(b"caf\xe9 \xff ok\n") == ["caf\ufffd \ufffd ok"]


def test_a_progress_bar_keeps_its_last_state() -> None:
    lines = LineSplitter(50)
    bar = b"".join(b"\r%3d%% |" % i + b"#" * (i // 10) for i in range(0, 101, 5))
    assert lines.feed(bar + b"\n") == ["100% |##########"]
    # redrawn far past the limit without a newline: the buffer keeps the last state only
    lines.feed(bar * 20)
    assert len(lines.buffer) <= 50 + 20


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, stage: str, **fields: Any) -> None:
        self.calls.append((stage, fields))


def test_reports_become_progress_fields_and_metrics() -> None:
    progress, notes = Progress(), []
    reports = Reports(progress, notes.append)  # type: ignore[arg-type]
    reports('{"step": 3, "steps": 10, "loss": 0.5, "accuracy": 0.9, "stage": "train"}')
    reports('{"metrics": {"f1": 0.7}, "percent": 250, "message": "ok"}')
    reports('{"step": 2.5, "epoch": -1, "name": "text", "nan": NaN}')
    reports("not json")
    reports("[1, 2]")
    assert progress.calls[0] == ("train", {"step": 3, "steps": 10, "loss": 0.5,
                                           "metrics": {"accuracy": 0.9}})
    assert progress.calls[1] == ("running", {"percent": 100.0, "message": "ok",
                                             "metrics": {"f1": 0.7}})
    assert progress.calls[2] == ("running", {"metrics": None})
    assert reports.metrics == {"accuracy": 0.9, "f1": 0.7, "loss": 0.5}
    assert reports.last == {"step": 3, "steps": 10, "loss": 0.5, "percent": 100.0,
                            "message": "ok", "stage": "train"}
    assert len(notes) == 6  # step, epoch, name, nan, not json, not an object: once each


def test_routing_of_command_jobs() -> None:
    enabled = ("sklearn", "pytorch-2.1-gpu", "diagnostic")
    assert route_command(enabled) == "sklearn"  # the first CPU type
    assert route_command(enabled, requires_gpu=True) == "pytorch-2.1-gpu"
    assert route_command(("pytorch-2.1-gpu",)) == "pytorch-2.1-gpu"  # no CPU type listed
    assert route_command(enabled, framework_override="diagnostic") == "diagnostic"
    with pytest.raises(CommandsDisabled):
        route_command(enabled, framework_override="tensorflow")
    with pytest.raises(CommandsDisabled):
        route_command(("sklearn",), requires_gpu=True)
    with pytest.raises(CommandsDisabled):
        route_command(())
    with pytest.raises(RoutingError, match="CPU-only"):
        route_command(enabled, requires_gpu=True, framework_override="sklearn")


def test_two_part_sse_ids_order_as_tuples() -> None:
    assert event_id_key("5-1:7-2") == (5, 1, 7, 2)
    assert event_id_key("5-1:7-3") > event_id_key("5-1:7-2")
    assert event_id_key("6-0:7-3") > event_id_key("5-1:9-9")
    assert event_id_key("5-1:junk") == (-1, -1)
