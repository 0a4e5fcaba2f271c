"""Entitlements wired onto a runtime: catalog, store, service, lifecycle job, outbox."""

from __future__ import annotations

from typing import Any

from services.entitlements.api import router
from services.entitlements.fastpath import CheckFastPath
from services.entitlements.service import EntitlementsService
from services.entitlements.store import EntitlementsStore
from services.entitlements.thresholds import ThresholdWatcher
from services.invoicing.drafts import Drafts
from services.invoicing.repricing import Repricing
from services.invoicing.store import InvoiceStore
from shared.app import Runtime, stop_each
from shared.catalog_versions import CatalogVersions, load_catalog_versions
from shared.clock import ServiceJob
from shared.kafka import make_admin, make_reader
from shared.keys import EntitlementsKeys
from shared.meters import MeterRegistry
from shared.observability import OUTBOX_BACKLOG
from shared.outbox import OutboxPublisher
from shared.settings import EntitlementsSettings, InvoicingSettings
from shared.usage_limits import LiveMeters


class EntitlementsPart:
    name = "entitlements"
    router = router
    fast_paths: tuple[CheckFastPath, ...] = (CheckFastPath(),)

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.settings = EntitlementsSettings(**(overrides or {}))
        # R1.4, R10.5: an invalid catalog version stops the service before anything starts,
        # naming the version and the field.
        self.catalogs: CatalogVersions = load_catalog_versions(self.settings.catalog)
        # A migration's preview is priced by invoicing's billing code on its stores, which
        # this service reads (services.invoicing.repricing), configured as invoicing is.
        self.invoicing_settings = InvoicingSettings(**(overrides or {}))
        self.registry = MeterRegistry.load(self.invoicing_settings.meters)
        # R10.4: the priced meters the checks read live; a limit on a meter no live counter
        # holds stops the start too.
        self.meters = LiveMeters(self.catalogs, self.registry,
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
        repricing = Repricing(Drafts(InvoiceStore(
            runtime.clickhouse, self.invoicing_settings.invoicing_clickhouse_database),
            self.catalogs, self.registry))
        self.service = EntitlementsService(store, self.catalogs, runtime.clock, self.settings,
                                           publisher.notify, repricing, self.meters.meters)
        # Expiries, downgrades, ends and trial ends (R4.1, R4.4, R4.5, R5.3) fall due on the clock.
        runtime.scheduler.register(ServiceJob("entitlements-lifecycle", self.service))
        # What a plan grants and limits is read from each tenant's version, as the checks do.
        self.watcher = ThresholdWatcher(store, self.catalogs, runtime.clock,
                                        publisher.notify,
                                        self.settings.entitlements_threshold_poll_s)
        self.watcher.start(runtime.health)
        if self.settings.entitlements_outbox_publisher:
            publisher.start(runtime.health)
            self.publisher = publisher
        runtime.app_state.entitlements = self.service

    async def stop(self) -> None:
        await stop_each(self.watcher, self.publisher)
        self.watcher, self.publisher = None, None
        if self.service is not None:
            self.service.store.close()
