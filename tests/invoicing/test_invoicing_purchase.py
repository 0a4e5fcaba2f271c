"""A confirmed purchase names its immediate invoice (docs/api.md purchase answer, R9.2), and a
retry with the same Idempotency-Key names the same one."""

from __future__ import annotations

import re

from tests.conftest import ADMIN, OWNER, RunningApp


async def test_r9_2_a_purchase_answer_names_its_immediate_invoice(platform: RunningApp,
                                                                  unique: str) -> None:
    tenant = f"buys-{unique}"
    created = await platform.client.post("/v1/tenants", headers=ADMIN, json={
        "id": tenant, "plan": "essentials", "cycle": "P1M", "time_zone": "Europe/Paris",
        "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-admin"})
    assert created.status_code == 201, created.text
    body = {"actor": OWNER, "item": "seats-crm", "quantity": 2, "confirm": True}
    headers = {**ADMIN, "Idempotency-Key": f"k-{unique}"}
    first = await platform.client.post(f"/v1/tenants/{tenant}/purchases", json=body,
                                       headers=headers)
    assert first.status_code == 201, first.text
    number = first.json()["invoice"]
    assert re.fullmatch(r"INV-\d{4}-\d{6}", number)
    assert "_event_id" not in first.json()

    invoice = (await platform.client.get(f"/v1/invoices/{number}", headers=ADMIN)).json()
    assert invoice["kind"] == "immediate"
    assert invoice["tenant"] == tenant
    charged = [c["amount"] for c in first.json()["charges"]]
    assert [line["amount"] for line in invoice["lines"]] == charged

    again = await platform.client.post(f"/v1/tenants/{tenant}/purchases", json=body,
                                       headers=headers)
    assert again.json() == first.json()
