"""The transactional outbox: events written to a Redis stream in the same Lua call as the
change they announce, then published to Kafka by `OutboxPublisher`.

A broker outage only delays events, and a crash between the change and its publication
publishes it on restart. An entry leaves the outbox only after the broker acked it, for the
published stream, labelled with the broker cluster that took it and kept for
`OUTBOX_RETENTION_S`. A publisher killed between the ack and the move leaves entries the
broker already holds: so whoever takes the lease first reads back the topic's last messages
(one batch's worth per partition) and moves the entries already there instead of sending
them again. And a broker that is a new one (another cluster id: the embedded broker keeps
its log in memory, so a restart of it forgets every event its consumers had not read yet)
gets the kept publications again before anything new, oldest first. Consumers drop repeats
by the stable event `id`. Entitlements and invoicing each own one outbox (`shared.keys`);
the writers append `id`, `key`, `value` fields with XADD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge
from redis.asyncio import Redis

from shared.consumer import LoopHealth
from shared.kafka import cluster_id

log = logging.getLogger(__name__)

# The longest read-back of the topic when the lease is taken; past it, the drain is retried.
READ_BACK_S = 30.0

# Take or renew a lease only if it is free or already ours (the outbox's, and the webhooks'
# per-queue leases).
LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


# Entries the broker acked move to the published stream, labelled with the broker cluster
# that took them; published entries older than the retention (ARGV[2], s) are forgotten.
# ARGV: cluster, retention, then per entry its outbox id, event id, key and value.
_PUBLISHED = """
for i = 3, #ARGV, 4 do
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[i + 1], 'key', ARGV[i + 2],
             'value', ARGV[i + 3], 'cluster', ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
local now = redis.call('TIME')
local oldest = (tonumber(now[1]) - tonumber(ARGV[2])) * 1000
redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%d', oldest))
return 1
"""

Entry = tuple[str, dict[str, str]]  # stream id, fields `id`, `key`, `value` (and `cluster`)


class OutboxKeys(Protocol):
    """An outbox's keys, as a service's layout declares them (`shared.keys`)."""

    @property
    def outbox(self) -> str: ...

    @property
    def outbox_lease(self) -> str: ...

    @property
    def outbox_published(self) -> str: ...


class OutboxStream:
    """One outbox stream, the lease that lets one replica at a time drain it, and the
    stream of what was published, kept for `retention_s`."""

    def __init__(self, redis: Redis, keys: OutboxKeys, retention_s: int) -> None:
        self.redis = redis
        self.stream, self.lease = keys.outbox, keys.outbox_lease
        self.published_stream = keys.outbox_published
        self.retention_s = retention_s
        self._take = redis.register_script(LEASE_SCRIPT)
        self._published = redis.register_script(_PUBLISHED)

    async def batch(self, count: int) -> list[tuple[str, dict[str, str]]]:
        rows: Any = await self.redis.xrange(self.stream, count=count)
        return [(str(i), {str(k): str(v) for k, v in f.items()}) for i, f in rows]

    async def length(self) -> int:
        return int(await self.redis.xlen(self.stream))

    async def published(self, entries: Sequence[Entry], cluster: str,
                        stream: str | None = None) -> None:
        """`entries` of `stream` (the outbox by default) are on `cluster`'s log."""
        if not entries:
            return
        args: list[str] = [cluster, str(self.retention_s)]
        for entry_id, fields in entries:
            args += [entry_id, fields["id"], fields["key"], fields["value"]]
        await self._published(keys=[stream or self.stream, self.published_stream], args=args)

    async def published_elsewhere(self, cluster: str, count: int) -> list[Entry]:
        """The oldest `count` kept publications that another cluster took."""
        found: list[Entry] = []
        start = "-"
        while len(found) < count:
            rows: Any = await self.redis.xrange(self.published_stream, min=start, count=count)
            found += [(str(i), {str(k): str(v) for k, v in f.items()}) for i, f in rows
                      if f.get("cluster") != cluster]
            if len(rows) < count:
                break
            start = f"({rows[-1][0]}"
        return found[:count]

    async def take_lease(self, holder: str, ttl_ms: int) -> bool:
        return bool(await self._take(keys=[self.lease], args=[holder, ttl_ms]))

    async def release_lease(self, holder: str) -> None:
        if await self.redis.get(self.lease) == holder:
            await self.redis.delete(self.lease)


class OutboxPublisher:
    """Drains an outbox stream to Kafka, oldest first; one replica at a time (a lease)."""

    def __init__(self, outbox: OutboxStream, producer: AIOKafkaProducer, topic: str,
                 poll_s: float, name: str, backlog: Gauge,
                 reader: Callable[[], AIOKafkaConsumer],
                 admin: Callable[[], AIOKafkaAdminClient], batch: int = 500,
                 lease_ms: int = 10_000) -> None:
        self._outbox = outbox
        self._producer = producer
        self._topic = topic
        self._reader = reader  # a consumer without group: the topic read back
        self._new_admin = admin  # asks which broker cluster answers
        self._admin: AIOKafkaAdminClient | None = None
        # False until the outbox's head was checked against the topic under this lease.
        self._checked = False
        # The cluster the kept publications were last checked against.
        self._cluster: str | None = None
        self._poll_s = poll_s
        self._name = name
        self._backlog = backlog
        self._batch = batch
        self._lease_ms = lease_ms
        self._holder = f"publisher-{secrets.token_hex(8)}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    def start(self, health: LoopHealth) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-outbox")
        health.supervise(self._task)

    async def stop(self) -> None:
        # A flag as well as a cancel: on 3.11 a cancel landing as a timeout expires can be
        # swallowed, so the loop also checks the flag, and we never wait on it for ever.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)
            self._task = None
        with contextlib.suppress(Exception):
            await self._outbox.release_lease(self._holder)
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None

    async def drain_once(self) -> int:
        """Publish what is in the outbox now; returns how many events were acked."""
        if not await self._outbox.take_lease(self._holder, self._lease_ms):
            self._checked = False  # another holder publishes: check again when ours again
            return 0
        cluster = await self._answering()
        if cluster != self._cluster:
            await self._publish_again(cluster)
            self._cluster = cluster
        sent = 0
        while entries := await self._outbox.batch(self._batch):
            if not self._checked:
                entries = await self._unpublished(entries, cluster)
                self._checked = True
                if not entries:
                    continue
            await self._send(entries)
            await self._outbox.published(entries, cluster)
            sent += len(entries)
            if len(entries) < self._batch:
                break
        return sent

    async def _send(self, entries: Sequence[Entry]) -> None:
        futures = [await self._producer.send(self._topic, fields["value"].encode(),
                                             key=fields["key"].encode(),
                                             headers=[("event-id", fields["id"].encode())])
                   for _, fields in entries]
        await asyncio.gather(*futures)  # every one acked (acks=all) before moving them

    async def _answering(self) -> str:
        if self._admin is None:
            admin = self._new_admin()
            await admin.start()
            self._admin = admin
        return await cluster_id(self._admin)

    async def _publish_again(self, cluster: str) -> None:
        """The kept publications another broker cluster took, sent to this one, oldest first:
        the embedded broker forgets its log at a restart, maybe before a consumer read them.
        Consumers drop the repeats by event id."""
        while entries := await self._outbox.published_elsewhere(cluster, self._batch):
            log.warning("%s outbox: the broker is a new one (%s); publishing %d kept event(s) "
                        "again", self._name, cluster, len(entries))
            await self._send(entries)
            await self._outbox.published(entries, cluster, stream=self._outbox.published_stream)

    async def _unpublished(self, entries: list[Entry], cluster: str) -> list[Entry]:
        """The entries the topic does not hold yet; those it holds (a holder killed between
        the broker's ack and the move) are moved to the published stream."""
        published = await self._published_ids()
        held = [(entry_id, fields) for entry_id, fields in entries if fields["id"] in published]
        if held:
            log.info("%s outbox: %d event(s) already on %s, not sent again", self._name,
                     len(held), self._topic)
            await self._outbox.published(held, cluster)
        return [(entry_id, fields) for entry_id, fields in entries
                if fields["id"] not in published]

    async def _published_ids(self) -> set[str]:
        """The `event-id` headers of each partition's last `batch` messages: a publisher
        deletes what it sent, one batch at a time, once acked."""
        partitions = await self._producer.partitions_for(self._topic)
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        reader = self._reader()
        await reader.start()
        try:
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            for tp in tps:
                reader.seek(tp, max(0, ends[tp] - self._batch))
            # Bounded as a whole: the client's `position` waits for ever on an offset reset.
            async with asyncio.timeout(READ_BACK_S):
                return await self._event_ids_up_to(reader, ends)
        except TimeoutError:
            raise TimeoutError(f"reading back {self._topic} took over {READ_BACK_S} s") from None
        finally:
            await reader.stop()

    @staticmethod
    async def _event_ids_up_to(reader: AIOKafkaConsumer, ends: dict[TopicPartition, int]
                               ) -> set[str]:
        seen: set[str] = set()
        tps = list(ends)
        while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
            for records in (await reader.getmany(*tps, timeout_ms=200)).values():
                seen.update(value.decode() for record in records
                            for key, value in record.headers if key == "event-id")
        return seen

    async def _run(self) -> None:
        delay = self._poll_s
        while not self._stopping:
            try:
                await self.drain_once()
                # Read after the drain: what is left is what the broker has not acked.
                self._backlog.set(await self._outbox.length())
                delay = self._poll_s
            except asyncio.CancelledError:
                raise
            except Exception:  # broker or store away: keep the events, retry later
                log.warning("%s outbox publish failed; retrying in %.1f s", self._name, delay,
                            exc_info=True)
                delay = min(delay * 2, 10.0)
            if self._stopping:
                return
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter], timeout=delay)
            finally:
                waiter.cancel()
            self._wake.clear()
