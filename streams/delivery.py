"""One stream entry as a worker holds it: read or reclaimed, parsed into a job message."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.records import JobMessage
from schemas.status import JobKind


@dataclass(slots=True)
class Delivery:
    """One entry this worker read or reclaimed."""

    stream: str
    kind: JobKind
    entry_id: str
    fields: dict[str, str]
    message: JobMessage | None = None
    parse_error: str = ""
    input_error: str = ""
    deliveries: int = 0
    attempt: int = 1
    job_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.job_id = self.fields.get("job_id", "")

    def take_inputs(self, raw: str) -> None:
        """Add the record's inline inputs (start.lua's reply) to the message; unreadable ones
        leave ``input_error`` set, and the worker fails the job with it."""
        if self.message is None or not raw:
            return
        try:
            self.message = self.message.with_inputs(raw)
        except ValueError as exc:
            self.input_error = str(exc)
