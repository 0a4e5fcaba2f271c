"""Invoice lines are written to `invoice_lines` as the documents state them (R9.7): their
texts (decimal amounts, dates, instants) go to ClickHouse as JSON columns and are parsed
there, so what is stored must be what the document says, for every shape a line takes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from services.invoicing.store import InvoiceStore
from shared.clickhouse.client import connect
from shared.clickhouse.migrate import migrate
from shared.stack import Endpoints
from shared.times import as_utc


def _line(**fields: Any) -> dict[str, Any]:
    line = {"module": "crm", "kind": "adjustment", "description": "d", "quantity": "1",
            "unit_price": "15.00", "amount": "15.00",
            "period": {"from": "2023-01-01", "to": "2023-02-01"}, "source": {}}
    line.update(fields)
    return line


async def test_lines_are_stored_as_their_documents_state_them(endpoints: Endpoints,
                                                               unique: str) -> None:
    """By hand, one invoice in KWD (3 minor digits) issued at 2026-02-01T11:00:00.5Z:
    - line 0: module-less, no period, a description with quotes, a newline and a dash, a
      source with nested values, quantity 0.25 × 12.5 → 3.125;
    - line 1: an adjustment of −2 users × 15.000 → −30.000, its meter `extra_users`;
    - line 2: quantity 0.0000000015 (more digits than the column's 9: stored 0.000000001,
      as any writer's would be), amount 0.000.
    A credit note on it, whose document names no meters, is stored with meter ''. A
    document rendered before documents listed their lines' meters (`_meters`), kept pending
    across an upgrade, names each line's in `_meter`: INV-0, one line of meter `old`."""
    ch = connect(endpoints.clickhouse_dsn)
    await migrate(ch)
    store = InvoiceStore(ch, f"lines_{unique.replace('-', '_')}")
    await store.ensure_database()
    source = {"query": {"sql": "SELECT 1", "params": {"to": "2026-02-01T00:00:00Z"}},
              "users": ["u1", "u2"]}
    invoice = {
        "number": "INV-1", "kind": "period", "tenant": "t-1",
        "issued_at": "2026-02-01T11:00:00.500000Z", "billing_date": "2026-02-01",
        "period": {"from": "2026-01-01", "to": "2026-02-01"}, "currency": "KWD",
        "subtotal": "-26.875", "tax": "0.000", "total": "-26.875",
        "usage_cutoff": "2026-02-01T10:59:59Z",
        "lines": [
            _line(module=None, kind="plan", description='plan "pro"\nline – 2',
                  quantity="0.25", unit_price="12.5", amount="3.125", period=None,
                  source=source),
            _line(quantity="-2", unit_price="15.000", amount="-30.000"),
            _line(quantity="0.0000000015", unit_price="1", amount="0.000"),
        ],
        "_meters": ["", "extra_users", "x"]}
    legacy = {k: v for k, v in invoice.items() if k != "_meters"} | {
        "number": "INV-0",
        "lines": [_line(quantity="1", unit_price="1", amount="1.000", _meter="old")]}
    credit = {"number": "CN-1", "kind": "credit_note", "invoice": "INV-1", "tenant": "t-1",
              "issued_at": "2026-02-02T00:00:00Z", "period": None, "currency": "KWD",
              "amount": "1.000", "subtotal": "1.000", "tax": "0.000", "total": "1.000",
              "lines": [_line(module=None, kind="credit", quantity="1", unit_price="1.000",
                              amount="1.000", period=None)]}
    await store.insert_documents([invoice, credit, legacy])
    stored = await ch.rows(
        f"SELECT number, tenant, issued_at, line_no, module, kind, description, quantity, "
        f"unit_price, amount, period_from, period_to, meter, source FROM {store.t_lines} "
        f"ORDER BY number DESC, line_no")
    rows = [(*row[:2], as_utc(row[2]), *row[3:]) for row in stored]  # naive: UTC
    issued = datetime(2026, 2, 1, 11, 0, 0, 500000, tzinfo=UTC)
    assert rows == [
        ("INV-1", "t-1", issued, 0, None, "plan", 'plan "pro"\nline – 2', Decimal("0.25"),
         Decimal("12.5"), Decimal("3.125"), None, None, "",
         '{"query":{"sql":"SELECT 1","params":{"to":"2026-02-01T00:00:00Z"}},'
         '"users":["u1","u2"]}'),
        ("INV-1", "t-1", issued, 1, "crm", "adjustment", "d", Decimal(-2), Decimal(15),
         Decimal(-30), date(2023, 1, 1), date(2023, 2, 1), "extra_users", "{}"),
        ("INV-1", "t-1", issued, 2, "crm", "adjustment", "d", Decimal("0.000000001"),
         Decimal(1), Decimal(0), date(2023, 1, 1), date(2023, 2, 1), "x", "{}"),
        ("INV-0", "t-1", issued, 0, "crm", "adjustment", "d", Decimal(1), Decimal(1),
         Decimal(1), date(2023, 1, 1), date(2023, 2, 1), "old", "{}"),
        ("CN-1", "t-1", datetime(2026, 2, 2, tzinfo=UTC), 0, None, "credit", "d", Decimal(1),
         Decimal(1), Decimal(1), None, None, "", "{}"),
    ]
    await store.insert_documents([invoice, credit, legacy])  # a retry after a crash: no copy
    (count,), = await ch.rows(f"SELECT count() FROM {store.t_lines}")
    assert count == 5
    # served without the internal meters, either way
    assert "_meters" not in (await store.invoice("INV-1") or {})
    assert "_meter" not in (await store.invoice("INV-0") or {"lines": [{}]})["lines"][0]


async def test_a_run_is_one_row_and_served_as_its_lines(endpoints: Endpoints,
                                                        unique: str) -> None:
    """By hand: INV-R keeps one line (the plan, 49.00) and one run of crm adjustments for
    January and February 2023 (15.00 each). Stored: two rows, the run's naming its first
    line and both periods; served: three lines, the plan first."""
    ch = connect(endpoints.clickhouse_dsn)
    await migrate(ch)
    store = InvoiceStore(ch, f"runs_{unique.replace('-', '_')}")
    await store.ensure_database()
    await store.insert_documents([{
        "number": "INV-R", "kind": "period", "tenant": "t-1",
        "issued_at": "2026-02-01T00:00:00Z", "billing_date": "2026-02-01",
        "period": {"from": "2026-01-01", "to": "2026-02-01"}, "currency": "EUR",
        "subtotal": "79.00", "tax": "0.00", "total": "79.00",
        "usage_cutoff": "2026-02-01T00:00:00Z",
        "lines": [_line(module=None, kind="plan", description="plan", unit_price="49.00",
                        amount="49.00", period=None)],
        "_meters": [""],
        "_runs": [{"module": "crm", "kind": "adjustment", "head": "late: ", "tail": ".",
                   "quantity": "1", "unit_price": "15.00", "amount": "15.00",
                   "source": {"late_event_ids": ["g"]}, "meter": "extra_users",
                   "periods": [["2023-01-01", "2023-02-01"], ["2023-02-01", "2023-03-01"]]}]}])
    rows = await ch.rows(f"SELECT line_no, kind, description, amount, period_from, meter, "
                         f"periods FROM {store.t_lines} ORDER BY line_no")
    assert [tuple(row) for row in rows] == [
        (0, "plan", "plan", Decimal(49), None, "", []),
        (1, "adjustment", "late: 2023-01-01 – 2023-02-01.", Decimal(15), date(2023, 1, 1),
         "extra_users", [(date(2023, 1, 1), date(2023, 2, 1)),
                         (date(2023, 2, 1), date(2023, 3, 1))])]
    served = await store.invoice("INV-R")
    assert served is not None
    assert "_runs" not in served
    assert [(x["description"], x["period"]) for x in served["lines"]] == [
        ("plan", None),
        ("late: 2023-01-01 – 2023-02-01.", {"from": "2023-01-01", "to": "2023-02-01"}),
        ("late: 2023-02-01 – 2023-03-01.", {"from": "2023-02-01", "to": "2023-03-01"})]


async def test_a_database_made_before_a_migration_gets_its_columns(endpoints: Endpoints,
                                                                  unique: str) -> None:
    """A database of its own (`INVOICING_CLICKHOUSE_DATABASE`) whose `invoice_lines` was
    made before `periods` existed gets the column when the service starts, empty for the
    rows it holds."""
    ch = connect(endpoints.clickhouse_dsn)
    await migrate(ch)
    store = InvoiceStore(ch, f"old_{unique.replace('-', '_')}")
    await store.ensure_database()
    await ch.command(f"ALTER TABLE {store.t_lines} DROP COLUMN periods")
    await ch.command(f"INSERT INTO {store.t_lines} (number, line_no) VALUES ('INV-OLD', 0)")
    await store.ensure_database()
    assert await ch.rows(f"SELECT number, periods FROM {store.t_lines}") == [("INV-OLD", [])]
