"""Bad input on every route → 4xx naming the field; roles and tenant scoping (docs/api.md);
credit notes never above what is left (R9.3); CSV and export shapes."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import ADMIN, RunningApp, create_tenant
from tests.invoicing.inv_support import invoices_of


async def _key(client: httpx.AsyncClient, role: str, tenant: str | None = None
               ) -> dict[str, str]:
    r = await client.post("/v1/api-keys", json={"role": role, "tenant": tenant}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


async def test_routes_bad_input_roles_and_credit_notes(platform: RunningApp,
                                                        unique: str) -> None:
    """First invoice of a tenant created "today" (2026-01-01, essentials 49.00, VAT 20 %):
    58.80. Credit 10.00, then 48.80 (all that is left); one cent more is refused."""
    c = platform.client
    tenant, other = f"api-{unique}", f"api2-{unique}"
    await create_tenant(c, tenant)
    await create_tenant(c, other)
    r = await c.post("/v1/billing-runs", json={"tenant": tenant}, headers=ADMIN)
    assert r.status_code == 200, r.text
    invoice = (await invoices_of(c, tenant))[0]
    number = invoice["number"]
    assert invoice["total"] == "58.80"
    assert invoice["kind"] == "immediate"

    finance, dashboard = await _key(c, "finance"), await _key(c, "dashboard")
    scoped = await _key(c, "finance", tenant)
    # bad input, each naming its field
    cases = [
        (c.get("/v1/invoices", params={"month": "2026-13"}, headers=ADMIN), 422, "month"),
        (c.get("/v1/invoices", params={"month": "jan"}, headers=ADMIN), 422, "month"),
        (c.get("/v1/invoices", params={"status": "paid"}, headers=ADMIN), 422, "status"),
        (c.get("/v1/invoices", params={"cursor": "%%%"}, headers=ADMIN), 422, "cursor"),
        (c.get("/v1/invoices/export", params={"month": "2026-1"}, headers=ADMIN), 422,
         "month"),
        (c.get("/v1/invoices/export", headers=ADMIN), 422, "month"),
        (c.get("/v1/invoices/INV-1999-000001", headers=ADMIN), 404, "number"),
        (c.post("/v1/billing-runs", json={"date": "2026-02-30"}, headers=ADMIN), 422, "date"),
        (c.post("/v1/billing-runs", json={"date": "01/02/2026"}, headers=ADMIN), 422, "date"),
        (c.post("/v1/billing-runs", json={"date": "2030-01-01"}, headers=ADMIN), 422, "date"),
        (c.post("/v1/billing-runs", json={"tenant": "nobody-" + unique}, headers=ADMIN), 404,
         "tenant"),
        (c.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "58.81"},
                headers=ADMIN), 422, "amount"),
        (c.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "-1"},
                headers=ADMIN), 422, "amount"),
        (c.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "1.001"},
                headers=ADMIN), 422, "amount"),
        (c.post(f"/v1/invoices/{number}/credit-notes", json={"amount": 5}, headers=ADMIN),
         422, "amount"),
        (c.post("/v1/invoices/INV-1999-000001/credit-notes", json={}, headers=ADMIN), 404,
         "number"),
        (c.get(f"/v1/tenants/nobody-{unique}/upcoming-invoice", headers=ADMIN), 404,
         "tenant"),
    ]
    for call, status, field in cases:
        response = await call
        assert response.status_code == status, response.text
        assert response.json()["error"]["field"] == field, response.text

    # roles: finance and dashboard cannot mutate; dashboard cannot export
    for headers in (finance, dashboard, scoped):
        r = await c.post("/v1/billing-runs", json={}, headers=headers)
        assert r.status_code == 403
        r = await c.post(f"/v1/invoices/{number}/credit-notes", json={}, headers=headers)
        assert r.status_code == 403
    assert (await c.get("/v1/invoices/export", params={"month": "2026-01"},
                        headers=dashboard)).status_code == 403
    assert (await c.get(f"/v1/invoices/{number}", headers=dashboard)).status_code == 200
    assert (await c.get("/v1/invoices", headers=finance)).status_code == 200
    # tenant-limited keys see only their tenant
    other_number = (await invoices_of(c, other))[0]["number"] if await invoices_of(c, other) \
        else None
    assert (await c.get(f"/v1/invoices/{number}", headers=scoped)).status_code == 200
    if other_number is not None:
        assert (await c.get(f"/v1/invoices/{other_number}", headers=scoped)).status_code == 404
    assert (await c.get("/v1/invoices", params={"tenant": other},
                        headers=scoped)).status_code == 404
    listed = (await c.get("/v1/invoices", headers=scoped)).json()["data"]
    assert {i["tenant"] for i in listed} == {tenant}
    assert (await c.get(f"/v1/tenants/{other}/upcoming-invoice",
                        headers=scoped)).status_code == 404
    upcoming = await c.get(f"/v1/tenants/{tenant}/upcoming-invoice", headers=scoped)
    assert upcoming.status_code == 200
    assert upcoming.json()["billing_date"] == "2026-02-01"
    assert upcoming.json()["total"] == "58.80"

    # CSV of one invoice, export of the month
    csv_one = await c.get(f"/v1/invoices/{number}", headers={**finance, "Accept": "text/csv"})
    assert csv_one.headers["content-type"].startswith("text/csv")
    assert csv_one.text.splitlines()[0].startswith("invoice,kind,tenant")
    assert f"{number},immediate,{tenant}" in csv_one.text
    export = await c.get("/v1/invoices/export", params={"month": "2026-01"}, headers=finance)
    assert export.status_code == 200
    assert number in export.text

    # credit notes: never above what is left (R9.3)
    r = await c.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "10.00"},
                     headers=ADMIN)
    assert r.status_code == 201
    assert r.json()["number"].startswith("CN-2026-")
    r = await c.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "48.81"},
                     headers=ADMIN)
    assert r.status_code == 422
    assert "48.80" in r.json()["error"]["message"]
    r = await c.post(f"/v1/invoices/{number}/credit-notes", json={}, headers=ADMIN)
    assert r.status_code == 201
    assert r.json()["amount"] == "48.80"
    r = await c.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "0.01"},
                     headers=ADMIN)
    assert r.status_code == 422
    doc = (await c.get(f"/v1/invoices/{number}", headers=ADMIN)).json()
    assert [n["amount"] for n in doc["credit_notes"]] == ["10.00", "48.80"]
    assert doc["status"] == "credited"
    assert doc["total"] == "58.80"


async def test_a_credit_note_sent_again_with_its_idempotency_key_is_issued_once(
        platform: RunningApp, unique: str) -> None:
    """Invoice 58.80; a credit of 58.80 with key K sent three times at once, then again once
    nothing is left: one note, the same answer each time; K with another body: 409; a bad
    key: 422 naming the header."""
    c = platform.client
    tenant = f"idem-cn-{unique}"
    await create_tenant(c, tenant)
    r = await c.post("/v1/billing-runs", json={"tenant": tenant}, headers=ADMIN)
    assert r.status_code == 200, r.text
    number = (await invoices_of(c, tenant))[0]["number"]
    url = f"/v1/invoices/{number}/credit-notes"
    headers = {**ADMIN, "Idempotency-Key": f"refund-{unique}"}
    body = {"amount": "58.80", "reason": "refund"}

    answers = await asyncio.gather(*(c.post(url, json=body, headers=headers)
                                     for _ in range(3)))
    assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]
    notes = {a.json()["number"] for a in answers}
    assert len(notes) == 1
    again = await c.post(url, json=body, headers=headers)  # nothing is left by now
    assert again.status_code == 201, again.text
    assert again.json()["number"] in notes
    assert again.json()["total"] == "58.80"

    r = await c.get(f"/v1/invoices/{number}", headers=ADMIN)
    assert [n["number"] for n in r.json()["credit_notes"]] == list(notes)
    assert r.json()["status"] == "credited"

    other = await c.post(url, json={"amount": "1.00"}, headers=headers)
    assert other.status_code == 409, other.text
    assert other.json()["error"]["field"] == "Idempotency-Key"
    bad = await c.post(url, json=body, headers={**ADMIN, "Idempotency-Key": "x" * 300})
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["field"] == "Idempotency-Key"
