"""Metering wired onto a runtime: store, live counters, consumer and routes."""

from __future__ import annotations

from typing import Any

from services.metering.api import router
from services.metering.rebuild import LiveRebuild
from services.metering.service import MeteringService
from services.metering.store import EventStore, LiveCounters
from services.metering.worker import UsageConsumer
from services.metering.zones import TenantZones
from shared.app import Runtime
from shared.catalog_versions import load_catalog_versions
from shared.events import EventValidator
from shared.keys import EntitlementsKeys
from shared.meters import MeterRegistry
from shared.resources import CountedResources
from shared.settings import MeteringSettings
from shared.usage_limits import LiveMeters


class MeteringPart:
    name = "metering"
    router = router

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.settings = MeteringSettings(**(overrides or {}))
        # Fail at construction, before anything starts, on an invalid meter file or catalog.
        self.registry = MeterRegistry.load(self.settings.meters)
        # The current version declares the counted resources: their event types are accepted
        # and counted (R7.4; every version is validated by the others). Every version's priced
        # meters are counted live for limits and thresholds (R10.4).
        catalogs = load_catalog_versions(self.settings.catalog)
        self.resources = CountedResources(catalogs.current)
        self.meters = LiveMeters(catalogs, self.registry,
                                 EntitlementsKeys(self.settings.entitlements_key_prefix)
                                 .meter_touched)
        self.consumer: UsageConsumer | None = None
        self.service: MeteringService | None = None
        self._barrier_registered = False

    async def start(self, runtime: Runtime) -> None:
        validator = EventValidator(self.resources.checkers(self.registry.configured_types()))
        store = EventStore(runtime.clickhouse)
        live = LiveCounters(runtime.redis, claim_ttl_s=self.settings.dedupe_window_days * 86_400)
        self.consumer = UsageConsumer(self.settings, validator, store, live,
                                      TenantZones(runtime.redis), runtime.producer,
                                      runtime.health,
                                      LiveRebuild(runtime.clickhouse, runtime.redis,
                                                  self.resources.events, self.meters),
                                      self.resources.events, self.meters)
        await self.consumer.start()
        if not self._barrier_registered:
            runtime.scheduler.register_barrier(self.caught_up)
            self._barrier_registered = True
        self.service = runtime.app_state.metering = MeteringService(
            store, self.registry, validator, runtime.producer, self.settings,
            self.consumer.stored, self.consumer.incarnation.answering)
        runtime.app_state.metering_settings = self.settings

    async def caught_up(self) -> None:
        """The clock's barrier (docs/api.md, PUT /v1/clock): every accepted event is counted."""
        if self.consumer is not None:
            await self.consumer.caught_up()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
