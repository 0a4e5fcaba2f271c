"""Kafka producer, consumer and topic factories (aiokafka), the same for tansu and Apache Kafka."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from shared.settings import CommonSettings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


def platform_topics(settings: CommonSettings) -> list[TopicSpec]:
    """The topics of docs/events.md."""
    return [
        TopicSpec(settings.usage_events_topic, settings.usage_events_partitions),
        TopicSpec(settings.usage_events_dlq_topic, 1),
        TopicSpec(settings.subscription_events_topic, settings.subscription_events_partitions),
        TopicSpec(settings.subscription_events_dlq_topic, 1),
    ]


async def ensure_topics(bootstrap: str, topics: list[TopicSpec]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(t.name, num_partitions=t.partitions, replication_factor=1) for t in topics])
        for name, code, message in response.topic_errors:
            # Apache Kafka raises for an existing topic; tansu answers error 36 instead.
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {name} failed: {code} {message}")
    finally:
        await admin.close()


def make_producer(settings: CommonSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        max_request_size=8 * 1024 * 1024,
    )


def make_consumer(settings: CommonSettings, group_id: str, *topics: str,
                  max_poll_records: int = 5_000, fetch_max_wait_ms: int = 500
                  ) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_records=max_poll_records,
        fetch_max_wait_ms=fetch_max_wait_ms,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )


def make_reader(settings: CommonSettings) -> AIOKafkaConsumer:
    """A consumer in no group, to read partitions it assigns itself (nothing committed)."""
    return AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                            enable_auto_commit=False)


def make_admin(settings: CommonSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)


async def cluster_id(admin: AIOKafkaAdminClient) -> str:
    """The id of the broker cluster answering now; a new id names a new log (the embedded
    broker gets one at every start)."""
    try:
        described = await admin.describe_cluster()
    except (RuntimeError, OSError) as exc:
        # aiokafka writing on a connection the broker has just closed (it died): an outage
        # like any other.
        raise KafkaConnectionError(f"the broker connection broke: {exc}") from exc
    return str(described.get("cluster_id") or "")


async def probe(producer: AIOKafkaProducer) -> None:
    """Raise unless the broker answers a metadata request."""
    await producer.client.fetch_all_metadata()
