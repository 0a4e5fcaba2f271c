"""The quantities late usage compares its recomputed periods with (R9.4) are read from
`invoice_lines` as ClickHouse sums them, parsed from JSON text (`ClickHouse.json_columns`):
exact decimals, module-less lines, the periods' dates, every line counted once.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from services.invoicing.store import InvoiceStore
from shared.clickhouse.client import connect
from shared.clickhouse.migrate import migrate
from shared.stack import Endpoints

JANUARY = {"from": "2023-01-01", "to": "2023-02-01"}
DECEMBER = {"from": "2022-12-01", "to": "2023-01-01"}


def _line(meter: str, quantity: str, module: str | None = "crm",
          period: dict[str, str] | None = JANUARY) -> dict[str, Any]:
    return {"module": module, "kind": "adjustment", "description": "d", "quantity": quantity,
            "unit_price": "1", "amount": "0.00", "period": period, "source": {},
            "_meter": meter}


def _invoice(number: str, tenant: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    return {"number": number, "kind": "period", "tenant": tenant,
            "issued_at": "2023-02-01T00:00:00Z", "billing_date": "2023-02-01",
            "period": JANUARY, "currency": "EUR", "subtotal": "0.00", "tax": "0.00",
            "total": "0.00", "usage_cutoff": "2023-02-01T00:00:00Z",
            "lines": [{k: v for k, v in line.items() if k != "_meter"} for line in lines],
            "_meters": [line["_meter"] for line in lines]}


async def test_r9_4_billed_quantities_are_the_exact_sums_of_the_lines(
        endpoints: Endpoints, unique: str) -> None:
    """By hand, tenant t-1 for January 2023: crm extra users billed 2 in arrears and
    corrected by 1 (3); sales extra users 2 (not asked for); support at 90.00 an hour,
    module-less, 1.25 h then 0.000000001 h more (1.250000001); e-mails 0.5 on one line,
    written twice (INV-2 again: one line, 0.5); December's crm (before the first period
    asked for) and a line without a meter are left out. Tenant t-2 was not asked for."""
    ch = connect(endpoints.clickhouse_dsn)
    await migrate(ch)
    store = InvoiceStore(ch, f"billed_{unique.replace('-', '_')}")
    await store.ensure_database()
    twice = _invoice("INV-2", "t-1", [_line("emails_sent", "0.5", module=None)])
    await store.insert_documents([
        _invoice("INV-1", "t-1", [
            _line("extra_users", "2"), _line("extra_users", "1"),
            _line("extra_users", "2", module="sales"),
            _line("support@90.00", "1.25", module=None),
            _line("support@90.00", "0.000000001", module=None),
            _line("extra_users", "5", period=DECEMBER), _line("", "7")]),
        twice, _invoice("INV-3", "t-2", [_line("extra_users", "4")])])
    await store.insert_documents([twice])
    billed = await store.billed_quantities_since(
        ["t-1"], date(2023, 1, 1), ["support", "emails_sent"], [("extra_users", "crm")])
    assert {key: {k: str(q) for k, q in found.items()} for key, found in billed.items()} == {
        ("t-1", date(2023, 1, 1), date(2023, 2, 1)): {
            ("extra_users", "crm"): "3", ("support@90.00", None): "1.250000001",
            ("emails_sent", None): "0.5"}}
