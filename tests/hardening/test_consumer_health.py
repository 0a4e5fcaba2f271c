"""A consumer never stops silently: a run of dead letters longer than the limit stops it,
logged, and `/readyz` turns 503 naming it, rather than dead-lettering a whole stream; a
consumer hung on an answer that never comes is named as stalled until it goes on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.consumer import LoopHealth
from shared.stack import Endpoints
from tests.conftest import create_tenant, eventually, produce
from tests.invoicing.inv_support import invoicing_part, private_platform


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


@pytest.mark.unit
def test_a_loop_quiet_longer_than_the_limit_is_stalled_until_it_beats_or_stops() -> None:
    """By hand, a limit of 60 s: beaten at 0, quiet at 60 (not over the limit), stalled at
    61 for 61 s; beaten at 70, fine; stalled again at 131; stopped on purpose, never listed.
    A loop that says why it stopped is listed with that reason, not as stalled."""
    now = [0.0]
    health = LoopHealth(60.0, now=lambda: now[0])
    health.beat("consumer")
    now[0] = 60.0
    assert health.problems() == {}
    now[0] = 61.0
    assert health.problems() == {"consumer": "stalled: no progress for 61 s"}
    now[0] = 70.0
    health.beat("consumer")
    assert health.problems() == {}
    now[0] = 131.0
    assert health.problems() == {"consumer": "stalled: no progress for 61 s"}
    health.report("consumer", "stopped: TooManyDeadLetters")
    assert health.problems() == {"consumer": "stopped: TooManyDeadLetters"}
    health.report("consumer", None)
    health.forget("consumer")
    now[0] = 1_000.0
    assert health.problems() == {}


async def test_a_consumer_hung_in_a_step_is_named_stalled_on_readyz_until_it_goes_on(
        endpoints: Endpoints, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invoicing's consumer hangs on the `tenant.created` of a new tenant (its step waits on
    an answer that does not come): within the limit (1 s here) `/readyz` is 503 naming
    `invoicing-consumer` as stalled; once the step returns, the loop polls again and
    `/readyz` is 200."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, loop_stall_after_s=1.0) as app:
        assert (await app.client.get("/readyz")).status_code == 200
        service = invoicing_part(app).service
        answer = asyncio.Event()

        async def hangs(event: dict[str, Any]) -> None:
            await answer.wait()

        monkeypatch.setattr(service, "on_subscription_event", hangs)
        await create_tenant(app.client, f"hung-{unique}")

        async def stalled() -> Any:
            response = await app.client.get("/readyz")
            checks = response.json().get("checks", {})
            return response.status_code == 503 and checks.get("invoicing-consumer")

        assert (await eventually(stalled, within=20)).startswith("stalled: no progress for")
        answer.set()

        async def ready() -> bool:
            return (await app.client.get("/readyz")).status_code == 200

        await eventually(ready, within=20)
