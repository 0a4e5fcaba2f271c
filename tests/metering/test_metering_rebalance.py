"""Two metering instances in one consumer group, joining and leaving mid-stream: the
partitions move (rebalances), and every event is still stored and counted exactly once."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from services.metering.part import MeteringPart
from shared.clickhouse.client import connect
from shared.stack import Endpoints
from tests.conftest import cloud_event, eventually, produce, settings_for, start_app

EVENTS = 20_000


async def test_instances_joining_and_leaving_count_each_event_once(endpoints: Endpoints
                                                                   ) -> None:
    name = uuid.uuid4().hex[:8]
    topic = f"usage-rb-{name}"
    values = settings_for(endpoints, usage_events_topic=topic,
                          usage_events_dlq_topic=f"{topic}.dlq",
                          subscription_events_topic=f"subscriptions-rb-{name}",
                          consumer_group=f"metering-rb-{name}", batch_max_records=500)
    tenants = [f"rb-{name}-{n}" for n in range(16)]  # spread over every partition
    stream = [(t.encode(), orjson.dumps(cloud_event(t, "email.sent", {"count": 1},
                                                    event_id=f"rb-{name}-{n}")))
              for n in range(EVENTS) for t in [tenants[n % len(tenants)]]]
    clickhouse = connect(endpoints.clickhouse_dsn)

    async def stored() -> tuple[int, int]:
        rows = await clickhouse.rows(
            "SELECT count(), uniqExact(source, id) FROM usage_events "
            "WHERE kafka_topic = {t:String}", {"t": topic})
        return int(rows[0][0]), int(rows[0][1])

    first, first_life = await start_app(values, parts=[MeteringPart(values)])
    second_life = None
    try:
        await produce(endpoints.kafka_bootstrap, topic, stream[:EVENTS // 2])
        async def started() -> bool:
            return (await stored())[0] > 0

        await eventually(started)
        # A second instance joins: the partitions are shared out again mid-stream.
        joining = MeteringPart(values)
        second, second_life = await start_app(values, parts=[joining])

        async def shares_partitions() -> bool:
            assert joining.consumer is not None
            return bool(joining.consumer.consumer.assignment())

        await eventually(shares_partitions)
        await produce(endpoints.kafka_bootstrap, topic, stream[EVENTS // 2:])
        await asyncio.sleep(1.0)
        # ...and leaves while there may still be work in hand.
        await second.client.aclose()
        await second_life.__aexit__(None, None, None)
        second_life = None

        async def done() -> bool:
            return (await stored())[1] == EVENTS

        await eventually(done, within=60)
        await asyncio.sleep(1.0)  # anything doubled would land now
        assert await stored() == (EVENTS, EVENTS)
    finally:
        if second_life is not None:
            await second_life.__aexit__(None, None, None)
        await first.client.aclose()
        await first_life.__aexit__(None, None, None)
