"""Admission of a worker without GPU devices: the same methods as ``consumers.admission``'s
``Admission``, and every job admitted as it comes."""

from __future__ import annotations

import asyncio
from typing import Any

from consumers.frameworks.base import FailJob
from schemas.workers import GpuInfo
from streams.delivery import Delivery


class NoAdmission:
    """Admission of a worker without GPU devices: every job is admitted as it comes, nothing
    is held, reserved or refused (the same methods as ``Admission``)."""

    holding = False

    def __init__(self, gpus: list[GpuInfo]) -> None:
        self.gpus = gpus

    async def admit(self, new: list[Delivery], free_slots: int) -> list[Delivery]:
        return new

    async def wait(self, stopping: asyncio.Event) -> None:
        return None

    def held(self) -> list[Delivery]:
        return []

    def drop(self, entry_id: str) -> None:
        return None

    def put_back(self, deliveries: list[Delivery]) -> None:
        return None

    def release(self, entry_id: str) -> None:
        return None

    def refusal(self, entry_id: str) -> FailJob | None:
        return None

    def context(self, entry_id: str) -> dict[str, Any]:
        return {}

    def job_ended(self, d: Delivery, result: Any) -> None:
        return None

    def inventory(self) -> list[GpuInfo]:
        return self.gpus

    async def close(self) -> None:
        return None
