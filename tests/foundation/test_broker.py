"""The embedded Kafka-protocol broker: consumer groups with manual commits, headers."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka import TopicSpec, ensure_topics
from shared.stack import EmbeddedStack


async def test_consumer_group_resumes_from_its_manual_commit(stack: EmbeddedStack,
                                                             unique: str) -> None:
    topic = f"probe-{unique}"
    await ensure_topics(stack.broker.bootstrap, [TopicSpec(topic, 2)])
    await ensure_topics(stack.broker.bootstrap, [TopicSpec(topic, 2)])  # existing: no error
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k",
                                         headers=[("h", str(i).encode())])
    finally:
        await producer.stop()

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(topic, bootstrap_servers=stack.broker.bootstrap,
                                group_id=f"g-{unique}", enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=1000,
                                heartbeat_interval_ms=200)

    first = consumer()
    await first.start()
    seen: list[bytes] = []
    partitions: set[TopicPartition] = set()
    try:
        while len(seen) < 4:
            batch = await first.getmany(timeout_ms=500, max_records=4 - len(seen))
            for tp, records in batch.items():
                partitions.add(tp)
                seen.extend(r.value for r in records if r.value is not None)
                assert all(dict(r.headers)["h"] == r.value[1:] for r in records)
        (partition,) = partitions  # one key, so one partition
        await first.commit({partition: 4})
    finally:
        await first.stop()

    second = consumer()
    await second.start()
    rest: list[bytes] = []
    try:
        while len(rest) < 6:
            batch = await second.getmany(timeout_ms=500)
            for records in batch.values():
                rest.extend(r.value for r in records if r.value is not None)
        assert await second.committed(TopicPartition(topic, partition.partition)) == 4
    finally:
        await second.stop()
    # Same key, one partition: the second member starts exactly after the committed offset.
    assert seen == [b"m0", b"m1", b"m2", b"m3"]
    assert rest == [f"m{i}".encode() for i in range(4, 10)]
