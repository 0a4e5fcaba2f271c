"""Webhook deliveries against a real HTTP receiver on loopback (docs/webhooks.md): every
event delivered and verified with `standardwebhooks`, the back-off on the platform clock, a
receiver down for hours, a receiver that never answers, and the log and manual retry."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from shared.stack import Endpoints
from tests.conftest import (
    ADMIN,
    OWNER,
    create_tenant,
    eventually,
    produce,
    set_clock,
)
from tests.webhooks.wh_support import (
    Receiver,
    deliveries,
    receiver,
    register,
    webhook_platform,
)

START = datetime(2026, 3, 1, 9, tzinfo=UTC)


def _iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


async def _buy(client: httpx.AsyncClient, tenant: str) -> dict[str, Any]:
    response = await client.post(f"/v1/tenants/{tenant}/purchases", headers=ADMIN, json={
        "actor": OWNER, "item": "seats-crm", "quantity": 2, "confirm": True})
    assert response.status_code in (201, 202), response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _invoices(client: httpx.AsyncClient, tenant: str, count: int) -> list[str]:
    async def listed() -> list[str] | None:
        response = await client.get("/v1/invoices", params={"tenant": tenant}, headers=ADMIN)
        numbers = sorted(d["number"] for d in response.json()["data"])
        return numbers if len(numbers) == count else None

    found: list[str] = await eventually(listed)
    return found


async def _topic_events(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    """The first `count` events of the topic, read as a product backend would."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(20):
            while len(found) < count:
                batch = await consumer.getmany(timeout_ms=200)
                found += [orjson.loads(r.value or b"") for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return found


async def test_every_event_is_delivered_signed_and_the_documents_announced_once(
        endpoints: Endpoints, unique: str) -> None:
    """A tenant created (R9.1: its first period invoiced at once), a pack bought (R9.2: an
    immediate invoice), a credit note on the first invoice (R9.7): six events on the topic,
    each delivered once to an endpoint listing their types, each verified by the library
    with the secret the creation answered."""
    types = ["tenant.created", "purchase.confirmed", "invoice.issued", "credit_note.issued"]
    tenant = f"wh-all-{unique}"
    async with receiver() as hooks, webhook_platform(endpoints, unique, START) as app:
        c = app.client
        created = await register(c, hooks.url, types)
        await create_tenant(c, tenant)
        await _buy(c, tenant)
        first, second = await _invoices(c, tenant, 2)
        note = await c.post(f"/v1/invoices/{first}/credit-notes", headers=ADMIN,
                            json={"amount": "10.00", "reason": "goodwill"})
        assert note.status_code == 201, note.text
        await eventually(lambda: _count(hooks, 5), within=20)
        on_topic = await _topic_events(endpoints.kafka_bootstrap,
                                       f"subscriptions-wh-{unique}", 5)
        log = await deliveries(c, created["id"])

    events = hooks.verified(created["secret"])
    assert len(events) == 5 == len({r.headers["webhook-id"] for r in hooks.received})
    by_type = defaultdict(list)
    for event in events:
        by_type[event["type"]].append(event)
    assert {t: len(e) for t, e in by_type.items()} == {
        "tenant.created": 1, "purchase.confirmed": 1, "invoice.issued": 2,
        "credit_note.issued": 1}
    issued = sorted(e["data"]["number"] for e in by_type["invoice.issued"])
    assert issued == [first, second]
    credit = by_type["credit_note.issued"][0]["data"]
    assert (credit["credits"], credit["total"], credit["tenant"]) == (first, "10.00", tenant)
    assert credit["actor"] == {"user_id": None, "role": None, "api_key": "key-admin"}
    # The purchase's invoice names the purchase and its actor.
    purchase = by_type["purchase.confirmed"][0]
    bought = next(e["data"] for e in by_type["invoice.issued"]
                  if e["data"]["purchase_event"] == purchase["id"])
    assert bought["actor"]["user_id"] == OWNER["user_id"]
    # The body is the event as the topic carries it, byte for byte in meaning.
    assert sorted(e["id"] for e in events) == sorted(e["id"] for e in on_topic)
    assert [(d["status"], d["attempts"], d["last_response"]["status"]) for d in log] == \
        [("delivered", 1, 204)] * 5


def _count(hooks: Receiver, n: int) -> Any:
    async def enough() -> bool:
        return len(hooks.deduplicated()) >= n
    return enough()


async def _steps(client: httpx.AsyncClient, hook: str, start: datetime, minutes: int,
                 step: int) -> None:
    """Move the clock `minutes` forward, `step` minutes at a time, each time until the
    delivery loop has tried every head that fell due (each pending head then waits for a
    later instant)."""
    for passed in range(step, minutes + 1, step):
        now = start + timedelta(minutes=passed)
        await set_clock(client, _iso(now))

        async def settled(now: datetime = now) -> bool:
            heads = [d for d in await deliveries(client, hook)
                     if d["status"] == "pending" and d["attempts"]]
            return all(datetime.fromisoformat(d["next_attempt_at"]) > now for d in heads)

        await eventually(settled, within=20)


async def test_a_receiver_down_for_two_hours_gets_everything_after_in_order_per_tenant(
        endpoints: Endpoints, unique: str) -> None:
    """Three tenants' events, 30 each, interleaved on the topic while the receiver is down;
    the clock moves two hours in 10-minute steps (every queue's head retried on the way,
    its delay doubling from 5 s to the 1-hour cap), then the receiver comes back and one
    more hour (the cap) passes: the deduplicated deliveries are all 90 events, each
    tenant's in the order the topic carried them."""
    tenants = [f"wh-down-{unique}-{n}" for n in range(3)]
    topic = f"subscriptions-wh-{unique}"
    messages = [(t.encode(), orjson.dumps({
        "specversion": "1.0", "id": f"{t}-{seq}", "source": "tests", "type": "test.step",
        "subject": t, "time": _iso(START), "data": {"tenant": t, "seq": seq}}))
        for seq in range(30) for t in tenants]
    hooks = Receiver()
    async with webhook_platform(endpoints, unique, START) as app:
        created = await register(app.client, hooks.url, ["test.step"])
        await produce(endpoints.kafka_bootstrap, topic, messages)

        async def attempted() -> bool:
            log = await deliveries(app.client, created["id"])
            return len(log) == 90 and sum(d["attempts"] for d in log) >= 3

        await eventually(attempted, within=20)
        await _steps(app.client, created["id"], START, 120, 10)
        down_log = await deliveries(app.client, created["id"])
        await hooks.start()
        try:
            await set_clock(app.client, _iso(START + timedelta(hours=3)))
            await eventually(lambda: _count(hooks, 90), within=30)
        finally:
            await hooks.stop()
        log = await deliveries(app.client, created["id"])

    assert hooks.received
    assert not any(d["status"] == "delivered" for d in down_log)
    heads = [d for d in down_log if d["attempts"]]
    assert len(heads) == 3
    assert all(d["attempts"] >= 2 and d["last_response"]["error"]
                                   for d in heads)
    kept = [r.event for r in hooks.deduplicated()]
    assert len(kept) == 90
    for tenant in tenants:
        assert [e["data"]["seq"] for e in kept if e["subject"] == tenant] == list(range(30))
    assert {d["status"] for d in log} == {"delivered"}


async def test_a_receiver_that_never_answers_does_not_delay_the_others(
        endpoints: Endpoints, unique: str) -> None:
    """Two endpoints get the same 20 events; one receiver never answers. The other has them
    all well before the first attempt to the silent one even times out (3 s): measured from
    the first send to the last event received."""
    tenant = f"wh-hang-{unique}"
    topic = f"subscriptions-wh-{unique}"
    messages = [(tenant.encode(), orjson.dumps({
        "specversion": "1.0", "id": f"hang-{n}", "source": "tests", "type": "test.step",
        "subject": tenant, "time": _iso(START), "data": {"seq": n}})) for n in range(20)]
    async with receiver("hang") as silent, receiver() as fine, \
            webhook_platform(endpoints, unique, START, webhooks_timeout_s=3.0) as app:
        await register(app.client, silent.url, ["test.step"])
        healthy = await register(app.client, fine.url, ["test.step"])
        began = time.monotonic()
        await produce(endpoints.kafka_bootstrap, topic, messages)
        await eventually(lambda: _count(fine, 20), within=20, interval=0.01)
        took = time.monotonic() - began
        silent_seen = len(silent.received)
        fine.verified(healthy["secret"])

    assert [r.event["data"]["seq"] for r in fine.received] == list(range(20))
    assert silent_seen == 1  # its tenant queue waits on its head
    assert took < 3.0, f"the healthy endpoint waited {took:.2f} s"
    print(f"healthy endpoint: 20 deliveries in {took:.3f} s beside a silent one")


async def test_a_delivery_is_failed_after_the_retry_window_and_a_manual_retry_delivers_it(
        endpoints: Endpoints, unique: str) -> None:
    """A receiver answering garbage with 200 counts as delivered; one down past the 24-hour
    window (clock moved a day and an hour, 3 hours at a time) has its delivery marked
    failed, and the next one of the same tenant goes on; a manual retry sends the failed
    one again under the same `webhook-id` once the receiver is back."""
    tenant = f"wh-fail-{unique}"
    topic = f"subscriptions-wh-{unique}"

    def step(n: int) -> tuple[bytes, bytes]:
        return tenant.encode(), orjson.dumps({
            "specversion": "1.0", "id": f"fail-{n}", "source": "tests", "type": "test.step",
            "subject": tenant, "time": _iso(START), "data": {"seq": n}})

    hooks = Receiver("garbage")
    async with webhook_platform(endpoints, unique, START) as app:
        created = await register(app.client, hooks.url, ["test.step"])
        hook = created["id"]
        await produce(endpoints.kafka_bootstrap, topic, [step(0)])
        await eventually(lambda: _attempts(app.client, hook, 1))
        await _steps(app.client, hook, START, 25 * 60, 180)
        failed = await deliveries(app.client, hook)
        await hooks.start()
        try:
            await produce(endpoints.kafka_bootstrap, topic, [step(1)])
            await eventually(lambda: _count(hooks, 1))
            retried = await app.client.post(
                f"/v1/webhooks/{hook}/deliveries/{failed[0]['id']}/retry", headers=ADMIN)
            await eventually(lambda: _count(hooks, 2))
        finally:
            await hooks.stop()
        log = await deliveries(app.client, hook)
        unknown = await app.client.post(f"/v1/webhooks/{hook}/deliveries/msg_nope/retry",
                                        headers=ADMIN)

    assert failed[0]["status"] == "failed"
    assert failed[0]["attempts"] >= 8
    assert failed[0]["last_attempt_at"] == "2026-03-02T09:00:00Z"  # the window's end
    assert retried.status_code == 202
    assert retried.json()["status"] == "pending"
    assert [r.event["data"]["seq"] for r in hooks.received] == [1, 0]
    assert hooks.received[1].headers["webhook-id"] == failed[0]["id"]
    assert [(d["id"], d["status"]) for d in log] == [
        (log[0]["id"], "delivered"), (failed[0]["id"], "delivered")]
    assert log[0]["last_response"]["body"].startswith("\x00")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "delivery"


async def _attempts(client: httpx.AsyncClient, hook: str, n: int) -> bool:
    log = await deliveries(client, hook)
    return bool(log) and log[0]["attempts"] >= n
