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


def _run(meter: str, quantity: str, periods: list[tuple[str, str]]) -> dict[str, Any]:
    return {"module": "crm", "kind": "adjustment", "head": "h ", "tail": " t",
            "quantity": quantity, "unit_price": "15.00", "amount": "15.00", "source": {},
            "meter": meter, "periods": periods}


async def test_r9_4_a_run_of_periods_counts_in_each_of_its_periods(
        endpoints: Endpoints, unique: str) -> None:
    """By hand, tenant t-1's crm extra users: January 2023 billed 2 in arrears (INV-1); INV-2
    corrects December 2022 to March 2023 by 1 each, kept as one run (one row). Read from
    1 January: January 2 + 1 = 3, February 1, March 1 (December is before the first day
    asked for); February and March, billed alike, share one dict. Read from 1 March: March
    alone, though the run's row starts in December."""
    ch = connect(endpoints.clickhouse_dsn)
    await migrate(ch)
    store = InvoiceStore(ch, f"runs_{unique.replace('-', '_')}")
    await store.ensure_database()
    run = _invoice("INV-2", "t-1", []) | {"_runs": [_run("extra_users", "1", [
        ("2022-12-01", "2023-01-01"), ("2023-01-01", "2023-02-01"),
        ("2023-02-01", "2023-03-01"), ("2023-03-01", "2023-04-01")])]}
    await store.insert_documents([_invoice("INV-1", "t-1", [_line("extra_users", "2")]), run])
    (rows,), = await ch.rows(f"SELECT count() FROM {store.t_lines} WHERE number = 'INV-2'")
    assert rows == 1
    crm = ("extra_users", "crm")
    billed = await store.billed_quantities_since(["t-1"], date(2023, 1, 1), [], [crm])
    assert {(start, end): {k: str(q) for k, q in found.items()}
            for (_, start, end), found in billed.items()} == {
        (date(2023, 1, 1), date(2023, 2, 1)): {crm: "3"},
        (date(2023, 2, 1), date(2023, 3, 1)): {crm: "1"},
        (date(2023, 3, 1), date(2023, 4, 1)): {crm: "1"}}
    february = billed[("t-1", date(2023, 2, 1), date(2023, 3, 1))]
    assert billed[("t-1", date(2023, 3, 1), date(2023, 4, 1))] is february
    march = await store.billed_quantities_since(["t-1"], date(2023, 3, 1), [], [crm])
    assert list(march) == [("t-1", date(2023, 3, 1), date(2023, 4, 1))]
