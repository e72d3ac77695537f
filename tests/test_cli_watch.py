"""``aiq watch`` and ``aiq submit``: the SSE parser, the request builders, and the commands end
to end against a real gateway and worker (subprocesses), including dropped connections."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from aiq.redis_server import RedisServer, free_port
from aiq.submit import SubmitError, build_inference, build_training, parse_assignments
from aiq.watch import SseDecoder, SseEvent, WatchExit, event_id_key, iter_sse_bytes, parse_sse
from streams.keys import QueueKeys
from tests.live_stack import Stack, live_stack, wait_until

# --- the SSE parser ------------------------------------------------------------------------


def events(text: str) -> list[SseEvent]:
    return list(parse_sse([text]))


def test_a_frame_of_the_gateway() -> None:
    frame = 'id: 1700000000000-0\nevent: progress\ndata: {"percent": 50}\n\n'
    assert events(frame) == [SseEvent("progress", '{"percent": 50}', "1700000000000-0")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert events("data: first\ndata:second\ndata:  third\ndata\n\n") == [
        SseEvent("message", "first\nsecond\n third\n", None)]


def test_comments_and_heartbeats_dispatch_nothing() -> None:
    assert events(": ping\n\n: ping\n\n") == []
    assert events("data: a\n: a comment inside an event\ndata: b\n\n") == [
        SseEvent("message", "a\nb", None)]


def test_id_persists_until_changed_and_a_nul_id_is_ignored() -> None:
    decoder = SseDecoder()
    got = list(parse_sse(["id: 1-0\ndata: x\n\n", "data: y\n\n", "id: 2-0\n\n",
                          "id: 3\x00\ndata: z\n\n"], decoder))
    assert [e.id for e in got] == ["1-0", "1-0", "2-0"]
    assert decoder.last_event_id == "2-0"  # an id-only block updates it without an event


def test_event_type_resets_after_each_dispatch_and_blank_blocks_dispatch_nothing() -> None:
    got = events("event: queued\ndata: 1\n\ndata: 2\n\nevent: orphan\n\n\n\ndata: 3\n\n")
    assert [(e.event, e.data) for e in got] == [("queued", "1"), ("message", "2"),
                                                ("message", "3")]


def test_retry_unknown_fields_and_an_unterminated_last_event() -> None:
    decoder = SseDecoder()
    got = list(parse_sse(["retry: 1500\nretry: soon\nfoo: bar\ndata: ok\n\ndata: cut"], decoder))
    assert got == [SseEvent("message", "ok", None)]
    assert decoder.retry_ms == 1500


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_line_ends_even_when_every_chunk_is_one_character(eol: str) -> None:
    text = "\ufeff" + eol.join(["id: 7-1", "event: started", "data: {}", "", ": ping", "",
                                "data: a", "data: b", "", ""])
    whole = events(text)
    assert whole == [SseEvent("started", "{}", "7-1"), SseEvent("message", "a\nb", "7-1")]
    assert list(parse_sse(list(text))) == whole


def test_a_crlf_split_between_chunks_is_one_line_end() -> None:
    assert list(parse_sse(["data: a\r", "\n\r", "\ndata: b\r\n\r\n"])) == [
        SseEvent("message", "a", None), SseEvent("message", "b", None)]


def test_bytes_split_inside_a_utf8_character() -> None:
    raw = 'data: {"message": "época ✓ \u2028"}\n\n'.encode()
    chunks = [raw[i:i + 1] for i in range(len(raw))]
    assert [e.data for e in iter_sse_bytes(chunks)] == ['{"message": "época ✓ \u2028"}']


def test_event_ids_order_as_redis_stream_ids() -> None:
    assert event_id_key("1700000000000-10") > event_id_key("1700000000000-9")
    assert event_id_key("1700000000001-0") > event_id_key("1700000000000-99")
    assert event_id_key("5") == (5, 0)
    assert event_id_key("junk") < event_id_key("0-0")


# --- request builders ----------------------------------------------------------------------


def test_assignments_parse_json_scalars_and_keep_other_text() -> None:
    assert parse_assignments(["n=100", "lr=1e-3", "deep=true", "crit=gini", 'v="8"',
                              "none=null", "rows=[1,2]", "empty="]) == {
        "n": 100, "lr": 0.001, "deep": True, "crit": "gini", "v": "8", "none": None,
        "rows": "[1,2]", "empty": ""}
    with pytest.raises(SubmitError, match="expected NAME=VALUE") as info:
        parse_assignments(["oops"])
    assert info.value.code == WatchExit.USAGE


def test_training_body_options_override_and_extend_the_file() -> None:
    base = {"model_type": "svm", "data_path": "builtin:iris",
            "hyperparameters": {"epochs": 2, "C": 1.0}}
    body = build_training(base, model_type="random_forest", data_path=None,
                          hyperparameters={"C": 2.0, "n_estimators": 10}, description=None,
                          requires_gpu=None, framework=None, gpu_mem_mb=None)
    assert body == {"model_type": "random_forest", "data_path": "builtin:iris",
                    "hyperparameters": {"epochs": 2, "C": 2.0, "n_estimators": 10}}
    assert base["model_type"] == "svm"  # the file's dict is not modified
    with pytest.raises(SubmitError, match="--model-type"):
        build_training({}, model_type=None, data_path=None, hyperparameters={},
                       description=None, requires_gpu=None, framework=None, gpu_mem_mb=None)


def test_inference_body_inline_rows_replace_a_files_data_path() -> None:
    body = build_inference({"model_id": "job_x", "data_path": "builtin:digits"}, model_id=None,
                           inputs="[[1, 2]]", data_path=None, parameters={"top": 1},
                           description=None, gpu_mem_mb=None)
    assert body == {"model_id": "job_x", "inputs": [[1, 2]], "parameters": {"top": 1}}
    with pytest.raises(SubmitError, match="JSON list"):
        build_inference({}, model_id="job_x", inputs='{"a": 1}', data_path=None,
                        parameters={}, description=None, gpu_mem_mb=None)


# --- end to end: the commands against a real gateway and worker ----------------------------

LIFECYCLE = re.compile(r"^\d\d:\d\d:\d\d  (\w+)")
KEYS = QueueKeys("diagnostic")


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    with live_stack(redis_server, tmp_path_factory.mktemp("stack")) as running:
        yield running


def cli_env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1"}


def aiq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiq", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), check=False)


def lifecycle(output: str) -> list[str]:
    return [m.group(1) for line in output.splitlines() if (m := LIFECYCLE.match(line))]


def stream_ids(stack: Stack, job_id: str) -> list[str]:
    """The SSE ids of the job's events: the queued event's 0-1 (it is kept in the type's feed
    and the record), then its stream's."""
    with redis_sync.Redis.from_url(stack.redis_url, decode_responses=True) as client:
        return ["0-1", *[entry_id for entry_id, _ in client.xrange(KEYS.job_events(job_id))]]


@pytest.mark.slow
def test_submit_watch_a_sleep_job_exits_0(stack: Stack) -> None:
    done = aiq("submit", "training", "--model-type", "sleep", "--hp", "seconds=1",
               "--hp", "steps=5", "--watch", "--url", stack.url)
    assert done.returncode == 0, done.stdout + done.stderr + stack.logs()
    job_id = done.stdout.splitlines()[0]
    assert re.fullmatch(r"job_[0-9a-f-]{36}", job_id)
    assert lifecycle(done.stdout) == ["queued", "started", "succeeded"]
    assert '"slept_s"' in done.stdout  # the result, on the succeeded line
    assert "100%" in done.stdout  # the progress bar's last state


@pytest.mark.slow
def test_submit_inference_on_a_trained_model_and_watch_it(stack: Stack) -> None:
    model = aiq("submit", "training", "--model-type", "noop", "--watch", "--url", stack.url)
    assert model.returncode == 0, model.stdout + model.stderr
    model_id = model.stdout.splitlines()[0]
    done = aiq("submit", "inference", "--model-id", model_id, "--inputs", "[[1, 2, 3], [4]]",
               "--watch", "--url", stack.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert lifecycle(done.stdout) == ["queued", "started", "succeeded"]
    assert '"predictions":[3,1]' in done.stdout


@pytest.mark.slow
def test_watch_a_failing_job_exits_1_with_its_error(stack: Stack) -> None:
    job_id = stack.submit("fail", error="fatal")
    done = aiq("watch", job_id, "--url", stack.url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert lifecycle(done.stdout)[-1] == "failed"
    assert "diagnostic: diagnostic fatal failure on attempt 1" in done.stdout


@pytest.mark.slow
def test_watch_a_cancelled_job_exits_2(stack: Stack) -> None:
    job_id = stack.submit("sleep", seconds=30, steps=300)
    watcher = subprocess.Popen([sys.executable, "-m", "aiq", "watch", job_id, "--url",
                                stack.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=cli_env())
    try:
        wait_until(lambda: _status(stack, job_id) == "running", 15, "job running", stack)
        answer = httpx.post(f"{stack.url}/jobs/{job_id}/cancel", timeout=5)
        assert answer.status_code == 200, answer.text
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == WatchExit.CANCELLED, out + err
    assert lifecycle(out)[-2:] == ["cancel_requested", "cancelled"]


def _status(stack: Stack, job_id: str) -> str:
    return str(httpx.get(f"{stack.url}/jobs/{job_id}/status", timeout=5).json()["status"])


@pytest.mark.slow
def test_watch_an_unknown_job_exits_3(stack: Stack) -> None:
    done = aiq("watch", "job_00000000-0000-0000-0000-000000000000", "--url", stack.url)
    assert done.returncode == 3
    assert "job_not_found" in done.stderr


@pytest.mark.slow
def test_submit_json_idempotency_and_file(stack: Stack, tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"model_type": "sleep", "hyperparameters": {"seconds": 0.1}}))
    first = aiq("submit", "training", "--file", str(spec), "--hp", "steps=2", "--json",
                "--idempotency-key", "cli-test-1", "--url", stack.url)
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert answer["duplicate"] is False and answer["worker_type"] == "diagnostic"
    again = aiq("submit", "training", "--file", str(spec), "--hp", "steps=2",
                "--idempotency-key", "cli-test-1", "--url", stack.url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == answer["job_id"]
    assert "matched job" in again.stderr
    job = httpx.get(f"{stack.url}/jobs/{answer['job_id']}", timeout=5).json()
    assert job["hyperparameters"]["seconds"] == 0.1 and job["hyperparameters"]["steps"] == 2


@pytest.mark.slow
def test_submit_from_file_uses_the_batch_endpoint_in_chunks_of_1000(
        stack: Stack, tmp_path: Path) -> None:
    """JSON Lines of 1,001 jobs: two batch calls; with --key-prefix the same command again
    queues nothing twice. A JSON array with one bad job queues none of its chunk (exit 3)."""
    lines = tmp_path / "sweep.jsonl"
    lines.write_text("\n".join(json.dumps({"model_type": "noop", "hyperparameters": {"i": i}})
                               for i in range(1001)) + "\n\n")
    first = aiq("submit", "--from-file", str(lines), "--key-prefix", "cli-sweep",
                "--url", stack.url)
    assert first.returncode == 0, first.stderr
    ids = first.stdout.split()
    assert len(ids) == len(set(ids)) == 1001
    assert "1001 jobs queued, 0 already queued" in first.stderr
    again = aiq("submit", "--from-file", str(lines), "--key-prefix", "cli-sweep", "--json",
                "--url", stack.url)
    assert again.returncode == 0, again.stderr
    answers = json.loads(again.stdout)
    assert [a["job_id"] for a in answers] == ids and all(a["duplicate"] for a in answers)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"model_type": "noop"}, {"model_type": "nope"}]))
    with redis_sync.Redis.from_url(stack.redis_url, decode_responses=True) as client:
        submitted = client.hget(KEYS.stats, "submitted")
        refused = aiq("submit", "--from-file", str(bad), "--url", stack.url)
        assert refused.returncode == 3
        assert "body.jobs[1].model_type" in refused.stderr
        assert client.hget(KEYS.stats, "submitted") == submitted
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"model_type": "noop"}, {"model_id": ids[0]}]))
    assert aiq("submit", "--from-file", str(mixed), "--url", stack.url).returncode == 3


@pytest.mark.slow
def test_submit_refused_exits_3_and_unreachable_exits_4(stack: Stack) -> None:
    refused = aiq("submit", "training", "--model-type", "nope", "--url", stack.url)
    assert refused.returncode == 3
    assert "validation_error" in refused.stderr and "unknown model type" in refused.stderr
    down = aiq("submit", "training", "--model-type", "noop", "--url",
               f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 4
    assert "cannot reach the gateway" in down.stderr


# --- dropped connections -------------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy to the gateway whose open connections the test can cut at any moment."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.accepted = 0
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return
            with self.lock:
                self.open += [client, upstream]
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Reset every open connection, as a proxy restart or a network blip would."""
        with self.lock:
            doomed, self.open = self.open, []
            self.cuts += 1
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _start_watch(url: str, job_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "aiq", "watch", job_id, "--url", url, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())


def _json_events(proc: subprocess.Popen[str],
                 on_event: Callable[[dict[str, Any]], None] = lambda _: None,
                 timeout: float = 60) -> list[dict[str, Any]]:
    """Read the watcher's JSON lines until it exits, calling ``on_event`` for each."""
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    got: list[dict[str, Any]] = []
    while (line := lines.get(timeout=timeout)) is not None:
        got.append(json.loads(line))
        on_event(got[-1])
    return got


def _assert_exactly_once(stack: Stack, job_id: str, got: list[dict[str, Any]]) -> None:
    ids = [e["id"] for e in got]
    assert ids == stream_ids(stack, job_id)  # every event, in order: no loss, no duplicate
    types = [e["type"] for e in got]
    assert types[0] == "queued" and types[-1] == "succeeded"
    assert types.count("started") == 1 and types.count("succeeded") == 1


@pytest.mark.slow
def test_watch_resumes_after_dropped_connections_without_loss_or_duplicates(
        stack: Stack) -> None:
    proxy = CuttableProxy(stack.port)
    url = f"http://127.0.0.1:{proxy.port}"
    job_id = stack.submit("sleep", seconds=6, steps=60)
    human = _start_watch(url, job_id)
    machine = _start_watch(url, job_id, "--json")

    def cut_twice() -> None:  # once both watchers follow the job live
        wait_until(lambda: proxy.accepted >= 2, 30, "both watchers connected", stack)
        for pause in (0.5, 1.0):
            time.sleep(pause)
            proxy.cut()

    cutter = threading.Thread(target=cut_twice, daemon=True)
    cutter.start()
    try:
        got = _json_events(machine)
        assert machine.wait(30) == 0, machine.stderr.read() if machine.stderr else ""
        out, err = human.communicate(timeout=30)
        cutter.join(30)
    finally:
        for proc in (human, machine):
            proc.kill()
        proxy.close()
    assert proxy.accepted >= 6, "the job ended before both cuts: the watchers started too late"
    _assert_exactly_once(stack, job_id, got)
    assert [e["step"] for e in got if e["type"] == "progress"] == list(range(1, 61))
    assert human.returncode == 0, out + err
    assert lifecycle(out) == ["queued", "started", "succeeded"]  # each line exactly once
    assert out.count("reconnecting") >= 2


@pytest.mark.slow
def test_watch_rides_out_a_gateway_crash_and_restart(stack: Stack) -> None:
    job_id = stack.submit("sleep", seconds=5, steps=50)
    machine = _start_watch(stack.url, job_id, "--json")
    crashed: list[int] = []

    def crash_once_live(event: dict[str, Any]) -> None:
        """Kill the gateway at the first progress event that is live, not replayed."""
        if crashed or event["type"] != "progress" or time.time() * 1000 - event["ts"] > 300:
            return
        crashed.append(event["step"])
        stack.gateway.kill()
        stack.gateway.wait(10)
        stack.restart_gateway()

    try:
        got = _json_events(machine, crash_once_live)
        assert machine.wait(30) == 0
    finally:
        machine.kill()
    assert crashed, "no live progress event: the watcher started after the job ended"
    assert crashed[0] < 50
    _assert_exactly_once(stack, job_id, got)
    assert machine.stderr is not None and "reconnecting" in machine.stderr.read()
