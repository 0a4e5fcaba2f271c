"""Idempotent runs, a run killed after numbering, late usage (R9.3, R9.4, R9.5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.stack import Endpoints
from tests.conftest import ADMIN, create_tenant, set_clock
from tests.invoicing.inv_support import (
    access,
    invoices_of,
    invoicing_part,
    lines,
    private_platform,
    send,
)


async def all_numbers(client: httpx.AsyncClient, tenants: list[str]) -> list[str]:
    numbers: list[str] = []
    for tenant in tenants:
        numbers.extend(i["number"] for i in await invoices_of(client, tenant))
    return sorted(numbers)


async def test_runs_twice_crash_and_late_usage(endpoints: Endpoints, unique: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Three tenants anchored 2026-05-01 (Europe/Paris, essentials 49.00, VAT 20 %).

    - The first invoices (immediate, 58.80 each) take INV-2026-000001..3.
    - On 06-01 the run dies after the numbers are taken, before ClickHouse (the write fails):
      numbers 4..6 are pending. Recovery writes them; POST /v1/billing-runs for 06-01 then
      issues nothing and lists the three tenants as skipped; running it again: the same.
    - Late usage (R9.4): a grant of u1 on crm dated 05-10 arrives after the 06-01 invoice.
      The 07-01 invoice carries an adjustment: (1 recomputed − 0 billed) × 15.00 = 15.00,
      period 05-01..06-01; plus June's own extra user 15.00 and plan 49.00 → 79.00, tax
      15.80, total 94.80. Numbers stay gapless: 7..9 on 07-01.
    """
    async with private_platform(endpoints, unique, datetime(2026, 4, 30, 12, tzinfo=UTC)) as app:
        c = app.client
        tenants = [f"safe{i}-{unique}" for i in range(3)]
        for tenant in tenants:
            await create_tenant(c, tenant, anchor="2026-05-01")
        await set_clock(c, "2026-05-01T12:00:00Z")
        service = invoicing_part(app).service
        assert service is not None
        async def dies(docs: object) -> None:
            raise RuntimeError("the process died before ClickHouse")

        monkeypatch.setattr(service.store, "insert_documents", dies)
        with pytest.raises(RuntimeError):
            await service.bill(tenants, datetime(2026, 6, 1, 12, tzinfo=UTC))
        monkeypatch.undo()
        assert len(await service.state.pending()) == 3
        assert await service.recover() == 3
        await set_clock(c, "2026-06-01T12:00:00Z")
        for _ in range(2):
            r = await c.post("/v1/billing-runs", json={"date": "2026-06-01"}, headers=ADMIN)
            assert r.status_code == 200, r.text
            assert r.json()["issued"] == []
            assert sorted(r.json()["skipped"]) == sorted(tenants)
        assert await all_numbers(c, tenants) == [f"INV-2026-{n:06d}" for n in range(1, 7)]

        await send(c, [access(tenants[0], "u1", "crm", "2026-05-10T10:00:00Z", f"l-{unique}")])
        await set_clock(c, "2026-07-01T12:00:00Z")
        found = await invoices_of(c, tenants[0])
        assert found[-1]["total"] == "94.80"
        assert lines(found[-1]) == [(None, "plan", "1", "49.00"),
                                    ("crm", "extra_users", "1", "15.00"),
                                    ("crm", "adjustment", "1", "15.00")]
        adjustment = found[-1]["lines"][2]
        assert adjustment["period"] == {"from": "2026-05-01", "to": "2026-06-01"}
        assert adjustment["source"]["late_event_ids"] == [f"l-{unique}"]
        assert await all_numbers(c, tenants) == [f"INV-2026-{n:06d}" for n in range(1, 10)]


async def test_a_date_billed_by_another_path_during_a_run_is_answered_skipped(
        endpoints: Endpoints, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`POST /v1/billing-runs` finds the tenant's anchor (2026-05-01) unbilled, then, before
    its own run, the date is billed by another path (here the clock's job, as the first
    invoice on `tenant.created` may be): the run issues nothing and answers the tenant as
    skipped (R9.5), not as neither issued nor skipped. One invoice: INV-2026-000001."""
    tenant = f"raced-{unique}"
    async with private_platform(endpoints, unique, datetime(2026, 5, 1, 12, tzinfo=UTC),
                                invoicing_consumer=False) as app:
        await create_tenant(app.client, tenant, anchor="2026-05-01")
        service = invoicing_part(app).service
        assert service is not None
        run = service.bill

        async def billed_first_by_the_clock(*args: Any, **kwargs: Any) -> Any:
            await run([tenant], datetime(2026, 5, 1, 12, tzinfo=UTC))
            return await run(*args, **kwargs)

        monkeypatch.setattr(service, "bill", billed_first_by_the_clock)
        answer = await app.client.post("/v1/billing-runs", headers=ADMIN,
                                       json={"tenant": tenant, "date": "2026-05-01"})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["issued"], answer.json()["skipped"]) == ([], [tenant])
        assert await all_numbers(app.client, [tenant]) == ["INV-2026-000001"]
