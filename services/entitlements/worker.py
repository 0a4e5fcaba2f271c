"""Clock-driven work: the lifecycle job (R4.1, R4.4, R4.5, R4.8, R5.3). The outbox every
committed change is written to (store.py) is published by `shared.outbox.OutboxPublisher`."""

from __future__ import annotations

from datetime import datetime

from services.entitlements.service import EntitlementsService


class LifecycleJob:
    """A `DueJob` for the platform scheduler: expiries, downgrades, ends, trial ends."""

    name = "entitlements-lifecycle"

    def __init__(self, service: EntitlementsService) -> None:
        self._service = service

    async def next_due(self) -> datetime | None:
        return await self._service.next_due()

    async def run_due(self, now: datetime) -> None:
        await self._service.run_due(now)
