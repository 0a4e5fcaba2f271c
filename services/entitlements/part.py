"""Entitlements wired onto a runtime: catalog, store, service, lifecycle job, outbox."""

from __future__ import annotations

from typing import Any

from services.entitlements.api import router
from services.entitlements.fastpath import CheckFastPath
from services.entitlements.service import EntitlementsService
from services.entitlements.store import EntitlementsStore
from services.entitlements.thresholds import ThresholdWatcher
from services.entitlements.worker import LifecycleJob
from shared.app import Runtime
from shared.catalog import Catalog, load_catalog
from shared.kafka import make_admin, make_reader
from shared.keys import EntitlementsKeys
from shared.meters import MeterRegistry
from shared.observability import OUTBOX_BACKLOG
from shared.outbox import OutboxPublisher
from shared.settings import EntitlementsSettings
from shared.usage_limits import LiveMeters


class EntitlementsPart:
    name = "entitlements"
    router = router
    fast_paths: tuple[CheckFastPath, ...] = (CheckFastPath(),)

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.settings = EntitlementsSettings(**(overrides or {}))
        # R1.4: an invalid catalog stops the service before anything starts, naming the field.
        self.catalog: Catalog = load_catalog(self.settings.catalog)
        # R10.4: the priced meters the checks read live; a limit on a meter no live counter
        # holds stops the start too.
        self.meters = LiveMeters(self.catalog, MeterRegistry.load(self.settings.meters),
                                 EntitlementsKeys(self.settings.entitlements_key_prefix)
                                 .meter_touched)
        self.publisher: OutboxPublisher | None = None
        self.watcher: ThresholdWatcher | None = None
        self.service: EntitlementsService | None = None

    async def start(self, runtime: Runtime) -> None:
        store = EntitlementsStore(runtime.redis, self.settings.entitlements_key_prefix,
                                  self.settings.outbox_retention_s)
        publisher = OutboxPublisher(store.outbox, runtime.producer,
                                    self.settings.subscription_events_topic,
                                    self.settings.entitlements_outbox_poll_s, "entitlements",
                                    OUTBOX_BACKLOG, lambda: make_reader(self.settings),
                                    lambda: make_admin(self.settings))
        self.service = EntitlementsService(store, self.catalog, runtime.clock, self.settings,
                                           publisher.notify, self.meters.meters)
        runtime.scheduler.register(LifecycleJob(self.service))
        self.watcher = ThresholdWatcher(store, self.catalog, runtime.clock, publisher.notify,
                                        self.settings.entitlements_threshold_poll_s)
        self.watcher.start(runtime.health)
        if self.settings.entitlements_outbox_publisher:
            publisher.start(runtime.health)
            self.publisher = publisher
        runtime.app_state.entitlements = self.service

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
        if self.publisher is not None:
            await self.publisher.stop()
            self.publisher = None
        if self.service is not None:
            self.service.store.close()
