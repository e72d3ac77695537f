"""A small, incremental Server-Sent Events parser that follows the WHATWG rules (``\\n``,
``\\r\\n`` or ``\\r`` line ends, even split across chunks; multi-line ``data``; ``:`` comments
such as the gateway's ``: ping`` heartbeats; ``id`` that persists from event to event;
``retry``). No I/O: ``aiq watch`` feeds it what it reads."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: ``event`` defaults to ``message``; ``id`` is the last event id
    seen so far on the stream (it persists across events, as in a browser's EventSource)."""

    event: str
    data: str
    id: str | None = None


@dataclass(slots=True)
class SseDecoder:
    """Feed text chunks as they arrive; get back the events they complete.

    ``last_event_id`` is what a client sends as ``Last-Event-ID`` when it reconnects;
    ``retry_ms`` is the reconnection delay the server last asked for (``None``: not set).
    """

    last_event_id: str | None = None
    retry_ms: int | None = None
    _partial: str = ""
    _skip_lf: bool = False
    _started: bool = False
    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, chunk: str) -> list[SseEvent]:
        if not self._started and chunk:
            self._started = True
            chunk = chunk.removeprefix("\ufeff")
        if self._skip_lf and chunk:
            chunk = chunk.removeprefix("\n")
            self._skip_lf = False
        buffer = self._partial + chunk
        events: list[SseEvent] = []
        pos = 0
        for match in _EOL.finditer(buffer):
            event = self._line(buffer[pos:match.start()])
            pos = match.end()
            if event is not None:
                events.append(event)
        self._partial = buffer[pos:]
        if buffer.endswith("\r"):  # a "\r\n" may be split across two chunks
            self._skip_lf = True
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment, e.g. a heartbeat
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event=event or "message", data="\n".join(data), id=self.last_event_id)


def parse_sse(chunks: Iterable[str], decoder: SseDecoder | None = None) -> Iterator[SseEvent]:
    """The events of a stream given as text chunks (an unterminated last event is dropped)."""
    decoder = decoder or SseDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)


def iter_sse_bytes(chunks: Iterable[bytes],
                   decoder: SseDecoder | None = None) -> Iterator[SseEvent]:
    """The same for raw bytes: SSE is always UTF-8, decoded incrementally."""
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return parse_sse((utf8.decode(chunk) for chunk in chunks), decoder)


def event_id_key(event_id: str) -> tuple[int, ...]:
    """Order of Redis stream ids (``<ms>-<seq>``), and of a command job's frame ids
    (``<event id>:<log id>``: both positions, each only grows); an unparsable id sorts first."""
    key: tuple[int, ...] = ()
    for part in event_id.split(":")[:2]:
        ms, _, seq = part.partition("-")
        try:
            key += (int(ms), int(seq or 0))
        except ValueError:
            return (-1, -1)
    return key
