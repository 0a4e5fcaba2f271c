"""Which broker the consumer reads: offsets, claims and acknowledgements mean something only
within one incarnation of the broker's log.

An embedded broker keeps its log in memory and gets a new cluster id at every start
(shared/stack.py), so a new cluster id means a new, empty log. The consumer asks the broker
before and after every commit, one metadata request each: a batch read from a log that is
not the one its claims were labelled with is never committed, and a commit is reported to
the callers waiting (acks.py) only when the same broker still answers after it. Moving
to a new incarnation makes the topics again, fails the callers still waiting on the old one
(they send again; the same ids count once) and rebuilds the live counters from ClickHouse
(rebuild.py) once nothing is in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from aiokafka.admin import AIOKafkaAdminClient

from services.metering.acks import StoredEvents
from services.metering.rebuild import LiveRebuild
from services.metering.store import LiveCounters
from services.metering.zones import TenantZones
from shared.consumer import Retrier
from shared.kafka import cluster_id, ensure_topics, make_admin, platform_topics
from shared.settings import MeteringSettings

log = logging.getLogger(__name__)


class BrokerReplaced(Exception):
    """The broker answering is not the one the batches in flight were read from."""


def incarnation_of(cluster: str) -> str:
    """A short name of the broker cluster for claim values (they are stored per event)."""
    return hashlib.blake2b(cluster.encode(), digest_size=6).hexdigest()


class Incarnation:
    def __init__(self, settings: MeteringSettings, live: LiveCounters, stored: StoredEvents,
                 rebuild: LiveRebuild, zones: TenantZones, retrier: Retrier) -> None:
        self._settings = settings
        self._live = live
        self._stored = stored
        self._rebuild = rebuild
        self._zones = zones
        self._retrier = retrier
        self._admin: AIOKafkaAdminClient | None = None
        self._opening = asyncio.Lock()
        # The cluster the claims and rows are labelled with ('' before the first assignment).
        self.cluster = ""
        self.group_offsets_trusted = True

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def answering(self) -> str:
        """The id of the cluster answering now."""
        async with self._opening:
            if self._admin is None:
                admin = make_admin(self._settings)
                await admin.start()
                self._admin = admin
        return await cluster_id(self._admin)

    async def ensure_current(self) -> str:
        """The labelled cluster; `BrokerReplaced` when another one answers."""
        answering = await self._retrier.run("kafka", self.answering)
        if answering != self.cluster:
            raise BrokerReplaced(f"broker cluster {answering!r}, batches of {self.cluster!r}")
        return answering

    async def move_to_answering(self) -> None:
        """Label what comes next with the broker answering now; when it is a new one, make the
        topics, fail the callers waiting on the old one and rebuild the counters. Call with
        nothing in flight."""
        answering = await self._retrier.run("kafka", self.answering)
        if self.cluster and answering != self.cluster:
            # A lenient broker may take a commit meant for the one before (a stale group's):
            # from now on the group's offsets are no resume point, ClickHouse alone is.
            self.group_offsets_trusted = False
            log.warning("the broker was replaced (%s -> %s): reading the new one from its "
                        "beginning", self.cluster, answering)
            self._stored.left(self.cluster)
            await self._retrier.run("kafka", lambda: ensure_topics(
                self._settings.kafka_bootstrap, platform_topics(self._settings)))
        self.cluster = answering
        self._live.incarnation = incarnation_of(answering)
        await self._rebuild_if_needed()

    async def _rebuild_if_needed(self) -> None:
        incarnation = self._live.incarnation
        rebuild = self._rebuild
        if not await self._retrier.run("redis", lambda: rebuild.needed(incarnation)):
            return
        tenants = await self._retrier.run("clickhouse", rebuild.tenants)
        zones = await self._retrier.run("zones", lambda: self._zones.zones(tenants))
        await self._retrier.run("rebuild", lambda: rebuild.run(incarnation, zones))
