"""Invoicing wired onto a runtime: stores, service, billing job, consumer, outbox publisher,
routes."""

from __future__ import annotations

from typing import Any

from services.invoicing.api import router
from services.invoicing.pdf import check_template
from services.invoicing.service import InvoicingService
from services.invoicing.state import InvoiceState
from services.invoicing.store import InvoiceStore
from services.invoicing.worker import SubscriptionConsumer
from shared.app import Runtime, stop_each
from shared.catalog_versions import CatalogVersions, check_versions_meters, load_catalog_versions
from shared.clock import ServiceJob
from shared.kafka import make_admin, make_reader
from shared.keys import EntitlementsKeys, InvoicingKeys
from shared.meters import MeterRegistry
from shared.observability import BILLING_RUNS, INVOICING_OUTBOX_BACKLOG
from shared.outbox import OutboxPublisher, OutboxStream
from shared.settings import InvoicingSettings
from shared.usage_limits import check_versions_limits


class InvoicingPart:
    name = "invoicing"
    router = router

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.settings = InvoicingSettings(**(overrides or {}))
        # R1.4, R10.5: an invalid catalog version stops the service before anything starts.
        self.catalogs: CatalogVersions = load_catalog_versions(self.settings.catalog)
        # R10.1: a usage charge prices a built-in or a declared meter; only here are both
        # the catalog and the declared meters known, so the meter names are checked here.
        self.meters = MeterRegistry.load(self.settings.meters)
        known = {m.slug: m for m in self.meters.all()}
        check_versions_meters(self.catalogs, set(known))
        check_versions_limits(self.catalogs, known)  # R10.4: limits only where counted live
        check_template(self.settings.invoicing_document_template)  # R9.8: the PDF
        self.service: InvoicingService | None = None
        self.consumer: SubscriptionConsumer | None = None
        self.publisher: OutboxPublisher | None = None
        self._registered = False

    async def start(self, runtime: Runtime) -> None:
        keys = InvoicingKeys(self.settings.invoicing_key_prefix)
        publisher = OutboxPublisher(
            OutboxStream(runtime.redis, keys, self.settings.outbox_retention_s), runtime.producer,
            self.settings.subscription_events_topic, self.settings.invoicing_outbox_poll_s,
            "invoicing", INVOICING_OUTBOX_BACKLOG, lambda: make_reader(self.settings),
            lambda: make_admin(self.settings))
        state = InvoiceState(runtime.redis, keys,
                             EntitlementsKeys(self.settings.entitlements_key_prefix),
                             self.settings.accounting_zone, publisher.notify)
        store = InvoiceStore(runtime.clickhouse, self.settings.invoicing_clickhouse_database)
        await store.ensure_database()
        service = InvoicingService(state, store, self.catalogs, runtime.clock, self.settings,
                                   meters=self.meters)
        await service.recover()  # a crash between numbering and ClickHouse (R9.3)
        self.service = runtime.app_state.invoicing = service
        # Started once the steps that may fail have passed: a part whose start fails is not
        # stopped, and its publisher would go on alone. What recovery announced waits in the
        # outbox meanwhile.
        if self.settings.invoicing_outbox_publisher:
            publisher.start(runtime.health)
            self.publisher = publisher
        if self.settings.invoicing_consumer:
            self.consumer = SubscriptionConsumer(self.settings, service, runtime.producer,
                                                 runtime.health)
            await self.consumer.start()
        if not self._registered:
            # Each tenant's billing dates fall due at local midnight (R2.1); under the manual
            # clock `PUT /v1/clock` runs them in time order.
            runtime.scheduler.register(ServiceJob("invoicing-billing", service,
                                                  BILLING_RUNS.labels("scheduled").inc))
            runtime.scheduler.register_barrier(self.caught_up)
            self._registered = True

    async def caught_up(self) -> None:
        if self.consumer is not None:
            await self.consumer.caught_up()

    async def stop(self) -> None:
        await stop_each(self.publisher, self.consumer)
        self.publisher, self.consumer = None, None
        if self.service is not None:
            self.service.documents.close()
