"""The outbox publisher after a crash between the broker's ack and the outbox delete: the
events the topic already holds are not sent again (R4.8 outbox; R10.4 asks for each
threshold event once, a SIGKILL included).

The state such a crash leaves is built by hand: the outbox keeps its entries (no publisher
runs in this app) and the first of them is put on the topic as the killed publisher would
have put it, with its `event-id` header. A publisher taking the lease then sends only the
second, and empties the outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from services.entitlements.part import EntitlementsPart
from services.entitlements.store import EntitlementsStore
from shared.kafka import make_admin, make_reader
from shared.observability import OUTBOX_BACKLOG
from shared.outbox import OutboxPublisher
from shared.stack import Endpoints
from tests.conftest import RunningApp, create_tenant
from tests.entitlements.ent_support import events_for, isolated_app


@asynccontextmanager
async def _app(endpoints: Endpoints, topic: str
               ) -> AsyncIterator[tuple[RunningApp, EntitlementsPart, EntitlementsStore]]:
    """Entitlements on its own topic, with no publisher of its own: the test drains."""
    async with isolated_app(endpoints, datetime(2026, 3, 1, 12, tzinfo=UTC),
                            entitlements_outbox_publisher=False,
                            subscription_events_topic=topic) as app:
        part = app.parts[0]
        assert isinstance(part, EntitlementsPart)
        assert part.service is not None
        yield app, part, part.service.store


def _publisher(part: EntitlementsPart, producer: AIOKafkaProducer, topic: str
               ) -> OutboxPublisher:
    assert part.service is not None
    return OutboxPublisher(part.service.store.outbox, producer, topic, 0.5, "entitlements",
                           OUTBOX_BACKLOG, lambda: make_reader(part.settings),
                           lambda: make_admin(part.settings))


async def test_events_already_on_the_topic_are_not_sent_again(endpoints: Endpoints) -> None:
    topic = f"subscriptions-readback-{uuid.uuid4().hex[:8]}"
    async with _app(endpoints, topic) as (app, part, store):
        producer = app.runtime.producer
        first, second = (f"readback-{n}-{uuid.uuid4().hex[:6]}" for n in (1, 2))
        await create_tenant(app.client, first)
        await create_tenant(app.client, second)
        [(_, sent_before_the_crash), (_, left)] = await store.outbox.batch(10)
        await producer.send_and_wait(
            topic, sent_before_the_crash["value"].encode(),
            key=sent_before_the_crash["key"].encode(),
            headers=[("event-id", sent_before_the_crash["id"].encode())])

        publisher = _publisher(part, producer, topic)
        try:
            assert await publisher.drain_once() == 1
        finally:
            await publisher.stop()
        assert await store.outbox.length() == 0
        for tenant, event_id in ((first, sent_before_the_crash["id"]), (second, left["id"])):
            found = await events_for(endpoints.kafka_bootstrap, tenant, 1, topic=topic)
            assert [e["id"] for e in found] == [event_id], tenant


async def test_a_new_broker_gets_the_kept_publications_again(endpoints: Endpoints) -> None:
    """The embedded broker forgets its log when it restarts, maybe before invoicing or the
    webhooks read an event. An event published to another broker cluster (its label in the
    kept publications) is sent again to the one answering now, once: the next drain finds
    it labelled with the current cluster and sends nothing."""
    topic = f"subscriptions-again-{uuid.uuid4().hex[:8]}"
    async with _app(endpoints, topic) as (app, part, store):
        producer = app.runtime.producer
        tenant = f"again-{uuid.uuid4().hex[:6]}"
        await create_tenant(app.client, tenant)
        [entry] = await store.outbox.batch(10)
        # What a publisher left before the broker was replaced: the event taken by a cluster
        # that is gone, nothing of it on the topic of the broker answering now.
        await store.outbox.published([entry], "a-cluster-that-is-gone")
        assert await store.outbox.length() == 0

        publisher = _publisher(part, producer, topic)
        try:
            assert await publisher.drain_once() == 0  # nothing new in the outbox
            found = await events_for(endpoints.kafka_bootstrap, tenant, 1, topic=topic)
            assert [e["id"] for e in found] == [entry[1]["id"]]

            again = _publisher(part, producer, topic)
            try:
                await again.drain_once()
            finally:
                await again.stop()
            found = await events_for(endpoints.kafka_bootstrap, tenant, 1, topic=topic)
            assert [e["id"] for e in found] == [entry[1]["id"]]  # not sent a second time
        finally:
            await publisher.stop()
