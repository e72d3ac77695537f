"""The one exponential backoff of aiq's retry loops (worker loops, the gateway's live reader,
``aiq watch`` reconnecting): ``first`` seconds, doubling up to ``cap``, back to ``first`` after
a success; with ``jitter``, each wait is spread by ± that fraction."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 0.1, cap: float = 5.0, jitter: float = 0.0) -> None:
        self.first, self.cap, self.jitter = first, cap, jitter
        self.delay = first

    def next(self) -> float:
        """How long to wait now; the wait after it is twice as long (up to ``cap``)."""
        wait = self.delay * (random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter
                             else 1.0)
        self.delay = min(self.delay * 2, self.cap)
        return wait

    def reset(self, first: float | None = None) -> None:
        """After a success: start again from ``first`` (or the given delay)."""
        self.delay = self.first if first is None else first
