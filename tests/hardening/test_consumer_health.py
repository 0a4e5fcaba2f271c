"""A consumer never stops silently: a run of dead letters longer than the limit stops it,
logged, and `/readyz` turns 503 naming it, rather than dead-lettering a whole stream."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.stack import Endpoints
from tests.conftest import eventually, produce
from tests.invoicing.inv_support import private_platform


async def test_too_many_dead_letters_in_a_row_stop_the_consumers_and_readyz_says_so(
        endpoints: Endpoints, unique: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, dead_letter_limit=2,
                                usage_events_dlq_topic=f"usage-dlq-{unique}",
                                subscription_events_dlq_topic=f"subs-dlq-{unique}") as app:
        assert (await app.client.get("/readyz")).status_code == 200
        garbage = [(b"t", b"not json")] * 3  # one more than the limit
        await produce(endpoints.kafka_bootstrap, f"usage-inv-{unique}", garbage)
        await produce(endpoints.kafka_bootstrap, f"subscriptions-inv-{unique}", garbage)

        async def both_reported() -> Any:
            response = await app.client.get("/readyz")
            checks = response.json().get("checks", {})
            stopped = {"metering-consumer", "invoicing-consumer"} <= set(checks)
            return response.status_code == 503 and stopped and checks

        checks = await eventually(both_reported, within=20)
        for loop in ("metering-consumer", "invoicing-consumer"):
            assert "more than 2 dead letters in a row" in checks[loop]
