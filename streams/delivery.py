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
    deliveries: int = 0
    attempt: int = 1
    job_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.job_id = self.fields.get("job_id", "")
