"""The platform killed with SIGKILL in the middle of its deliveries loses none: they are in
valkey (AOF on) before the consumer commits, and the restarted platform sends every one not
yet delivered, each tenant's in order, under the same `webhook-id`.

The embedded platform runs as its own process tree (`python -m services.embedded`), killed
whole with `os.killpg`, as in tests/metering/test_ingest_restarts.py. Its broker keeps
nothing across the kill, so the kill waits until every event is a delivery in valkey: what
is at stake here is what the deliveries themselves survive.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import httpx

from tests.conftest import eventually
from tests.metering.test_ingest_restarts import ADMIN, Platform
from tests.webhooks.wh_support import Receiver

TENANTS = 20
EVENTS = 2 * TENANTS  # tenant.created, then its first invoice.issued (R9.1)


async def _create_tenants(client: httpx.AsyncClient, prefix: str) -> None:
    for n in range(TENANTS):
        answer = await client.post("/v1/tenants", headers=ADMIN, json={
            "id": f"{prefix}-{n}", "plan": "essentials", "cycle": "P1M",
            "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
            "admin_user": "u-admin"})
        assert answer.status_code == 201, answer.text


async def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    """The receiver is down while 20 tenants are created (each a `tenant.created` and its
    first `invoice.issued`); once all 40 deliveries are in valkey it comes up, slow (0.3 s
    an answer, two at a time), and the whole platform is killed after its first few
    answers. After the restart the deduplicating receiver holds all 40 events, each
    tenant's `tenant.created` before its `invoice.issued`."""
    platform = Platform(tmp_path, WEBHOOKS_ALLOW_HTTP_LOOPBACK="true", WEBHOOKS_TIMEOUT_S="2",
                        WEBHOOKS_ENDPOINT_CONCURRENCY="2")
    hooks = Receiver(delay_s=0.3)
    try:
        await platform.start()
        async with httpx.AsyncClient(base_url=platform.base, timeout=10) as client:
            created = await client.post("/v1/webhooks", headers=ADMIN, json={
                "url": hooks.url, "events": ["tenant.created", "invoice.issued"]})
            assert created.status_code == 201, created.text
            hook = created.json()["id"]
            await _create_tenants(client, "kill")

            async def all_written() -> list[str] | None:
                log = (await client.get(f"/v1/webhooks/{hook}/deliveries?limit=500",
                                        headers=ADMIN)).json()["data"]
                return [d["id"] for d in log] if len(log) == EVENTS else None

            written = await eventually(all_written, within=30)
        await hooks.start()
        await eventually(lambda: _received_at_least(hooks, 4), within=30)
        await platform.kill()
        sent_before = len(hooks.deduplicated())
        await platform.start()
        await eventually(lambda: _received_at_least(hooks, EVENTS), within=60)
    finally:
        platform.abandon()
        await hooks.stop()

    assert sent_before < EVENTS, "the kill must come mid-delivery"
    kept = hooks.deduplicated()
    assert sorted(r.headers["webhook-id"] for r in kept) == sorted(written)
    per_tenant = defaultdict(list)
    for request in kept:
        per_tenant[request.event["subject"]].append(request.event["type"])
    assert dict(per_tenant) == {f"kill-{n}": ["tenant.created", "invoice.issued"]
                                for n in range(TENANTS)}
    print(f"{sent_before} of {EVENTS} sent before the kill; {len(hooks.received)} requests "
          f"in all, {len(kept)} distinct")


async def _received_at_least(hooks: Receiver, count: int) -> bool:
    return len(hooks.deduplicated()) >= count
