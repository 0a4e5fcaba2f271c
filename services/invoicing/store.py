"""Invoicing's documents in ClickHouse: invoices, lines and credit notes, and the usage
reads a billing run needs (docs/invoicing.md, "Storage").

Every ClickHouse value is a bound parameter. Reads of `usage_events` always deduplicate with
`LIMIT 1 BY source, id` (a copy never changes a figure); reads of our own tables keep one
row per number (`LIMIT 1 BY number`), so a re-insert after a crash can never double anything.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from services.invoicing.documents import kept, run_line, served
from shared import events as ev
from shared.clickhouse.client import ClickHouse
from shared.meters import Meter, value_expression
from shared.times import as_utc, from_utc_text, utc_text

INVOICE_COLUMNS: Final = ("number", "tenant", "kind", "issued_at", "billing_date",
                          "period_from", "period_to", "currency", "subtotal", "tax", "total",
                          "usage_cutoff", "doc")
CREDIT_COLUMNS: Final = ("number", "invoice", "tenant", "issued_at", "amount", "doc")


@dataclass(frozen=True, slots=True)
class LateEvent:
    tenant: str
    type: str
    time: datetime
    module: str  # of an access event; '' for the others
    id: str
    stored_at: datetime


def _date(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(str(value))


def encode_cursor(issued_at: str, number: str) -> str:
    return base64.urlsafe_b64encode(f"{issued_at}|{number}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    raw = base64.urlsafe_b64decode(cursor.encode()).decode()
    issued, _, number = raw.partition("|")
    if not number:
        raise ValueError("no number")
    return from_utc_text(issued), number


class InvoiceStore:
    """ClickHouse: invoices, lines, credit notes, and the usage billing reads."""

    def __init__(self, clickhouse: ClickHouse, database: str = "") -> None:
        self._ch = clickhouse
        self._db = database
        prefix = f"{database}." if database else ""
        self.t_invoices = f"{prefix}invoices"
        self.t_lines = f"{prefix}invoice_lines"
        self.t_credits = f"{prefix}credit_notes"

    async def ensure_database(self) -> None:
        """Tables of the same shape as the migrated ones, in the configured database."""
        if not self._db:
            return
        await self._ch.command(f"CREATE DATABASE IF NOT EXISTS {self._db}")
        tables = ("invoices", "invoice_lines", "credit_notes")
        for table in tables:
            await self._ch.command(
                f"CREATE TABLE IF NOT EXISTS {self._db}.{table} AS default.{table}")
        # Tables made before a migration added columns to the migrated ones get them too.
        missing = await self._ch.rows(
            "SELECT table, name, type, default_expression FROM system.columns "
            "WHERE database = 'default' AND table IN {ts:Array(String)} "
            "AND (table, name) NOT IN (SELECT table, name FROM system.columns "
            "WHERE database = {db:String}) ORDER BY table, position",
            {"ts": list(tables), "db": self._db})
        for table, name, kind, default in missing:
            await self._ch.command(
                f"ALTER TABLE {self._db}.{table} ADD COLUMN IF NOT EXISTS {name} {kind}"
                + (f" DEFAULT {default}" if default else ""))

    async def _rows(self, sql: str, params: dict[str, Any] | None = None
                    ) -> list[tuple[Any, ...]]:
        return await self._ch.rows(self._sql(sql), params)

    def _sql(self, sql: str) -> str:
        return (sql.replace("FROM invoices", f"FROM {self.t_invoices}")
                .replace("FROM invoice_lines", f"FROM {self.t_lines}")
                .replace("FROM credit_notes", f"FROM {self.t_credits}"))

    # --- writes --------------------------------------------------------------------------

    async def insert_documents(self, docs: Sequence[dict[str, Any]]) -> None:
        """Invoices and credit notes alike, with their lines (R9.7); credit notes also in
        `credit_notes`, the index of what each invoice was credited."""
        invoices = list(docs)
        credits = [d for d in docs if d["kind"] == "credit_note"]
        if invoices:
            token = "inv:" + ",".join(sorted(d["number"] for d in invoices))
            lines = _line_columns(invoices)
            if lines["number"]:
                await self._ch.insert_json_columns(self.t_lines, lines, settings={
                    "insert_deduplication_token": token + ":lines", **_JSON_OBJECTS_AS_TEXT})
            await self._ch.insert_columns(self.t_invoices, INVOICE_COLUMNS, [
                [d["number"] for d in invoices],
                [d["tenant"] for d in invoices],
                [d["kind"] for d in invoices],
                [from_utc_text(d["issued_at"]) for d in invoices],
                [_date(d.get("billing_date")) for d in invoices],
                [_date((d["period"] or {}).get("from")) for d in invoices],
                [_date((d["period"] or {}).get("to")) for d in invoices],
                [d["currency"] for d in invoices],
                [Decimal(d["subtotal"]) for d in invoices],
                [Decimal(d["tax"]) for d in invoices],
                [Decimal(d["total"]) for d in invoices],
                [from_utc_text(d.get("usage_cutoff") or d["issued_at"]) for d in invoices],
                [orjson.dumps(kept(d)).decode() for d in invoices],
            ], settings={"insert_deduplication_token": token})
        if credits:
            token = "cn:" + ",".join(sorted(d["number"] for d in credits))
            await self._ch.insert_columns(self.t_credits, CREDIT_COLUMNS, [
                [d["number"] for d in credits], [d["invoice"] for d in credits],
                [d["tenant"] for d in credits], [from_utc_text(d["issued_at"]) for d in credits],
                [Decimal(d["amount"]) for d in credits],
                [orjson.dumps(d).decode() for d in credits],
            ], settings={"insert_deduplication_token": token})

    # --- reads: invoices -----------------------------------------------------------------

    async def invoice(self, number: str) -> dict[str, Any] | None:
        """An invoice or a credit note by its number."""
        rows = await self._rows(
            "SELECT doc FROM invoices WHERE number = {n:String} LIMIT 1", {"n": number})
        return None if not rows else _document(rows[0][0])

    async def credit_notes(self, invoices: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if not invoices:
            return found
        rows = await self._rows(
            "SELECT invoice, doc FROM (SELECT invoice, number, doc FROM credit_notes "
            "WHERE invoice IN {ns:Array(String)} LIMIT 1 BY number) ORDER BY number",
            {"ns": list(invoices)})
        for invoice, doc in rows:
            found[str(invoice)].append(orjson.loads(doc))
        return found

    async def credit_note(self, number: str) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT doc FROM credit_notes WHERE number = {n:String} LIMIT 1", {"n": number})
        return None if not rows else _document(rows[0][0])

    async def list_invoices(self, month: tuple[datetime, datetime] | None, tenant: str | None,
                            status: str | None, kind: str | None,
                            cursor: tuple[datetime, str] | None, limit: int
                            ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        where = ["1"]
        if kind is not None:
            params["kind"] = kind
            where.append("kind = {kind:String}")
        if month is not None:
            params["mfrom"], params["mto"] = month
            where.append("issued_at >= {mfrom:DateTime64(6, 'UTC')} "
                         "AND issued_at < {mto:DateTime64(6, 'UTC')}")
        if tenant is not None:
            params["tenant"] = tenant
            where.append("tenant = {tenant:String}")
        if cursor is not None:
            params["cat"], params["cnum"] = cursor
            where.append("(issued_at, number) < ({cat:DateTime64(6, 'UTC')}, {cnum:String})")
        having = ""
        if status is not None:
            params["status"] = status
            having = " WHERE status = {status:String}"
        sql = (
            "SELECT doc, status FROM (SELECT i.doc AS doc, i.issued_at AS issued_at, "
            "i.number AS number, multiIf(c.credited = 0, 'issued', c.credited >= i.total, "
            "'credited', 'partially_credited') AS status "
            "FROM (SELECT * FROM invoices WHERE " + " AND ".join(where) +
            " LIMIT 1 BY number) AS i LEFT JOIN (SELECT invoice, sum(amount) AS credited "
            "FROM (SELECT invoice, number, amount FROM credit_notes LIMIT 1 BY number) "
            "GROUP BY invoice) AS c ON c.invoice = i.number)" + having +
            " ORDER BY issued_at DESC, number DESC LIMIT {limit:UInt32}")
        rows = await self._rows(sql, params)
        return [_document(doc) for doc, _ in rows]

    async def month_documents(self, start: datetime, end: datetime, tenant: str | None
                              ) -> list[dict[str, Any]]:
        """Every invoice and credit note issued in [start, end), in issue order."""
        params: dict[str, Any] = {"a": start, "b": end}
        only = ""
        if tenant is not None:
            params["t"] = tenant
            only = " AND tenant = {t:String}"
        rows = await self._rows(
            "SELECT doc FROM (SELECT number, issued_at, doc FROM invoices "
            "WHERE issued_at >= {a:DateTime64(6, 'UTC')} AND issued_at < "
            "{b:DateTime64(6, 'UTC')}" + only + " LIMIT 1 BY number) "
            "ORDER BY issued_at, number", params)
        return [_document(doc) for (doc,) in rows]

    async def billed_quantities_since(self, tenants: Sequence[str], first: date,
                                      meters: Sequence[str],
                                      meter_modules: Sequence[tuple[str, str]] = ()
                                      ) -> dict[tuple[str, date, date],
                                                dict[tuple[str, str | None], Decimal]]:
        """Quantity billed so far per (tenant, period) and (meter, module), for periods from
        `first`: arrears lines plus earlier adjustments for the same period (R9.4). Only the
        meters asked for (a meter's name before any '@rate'): those of `meters` on any
        module, those of `meter_modules` on the module named.

        Periods billed the same quantities share one dict (never changed): late usage
        reads dozens of periods a tenant, most billed alike, and tells them so at a glance.
        """
        if not tenants:
            return {}
        # A row stands for one line per period of `periods` (a run), or one line of its own
        # period when `periods` is empty. The periods come grouped by what was billed.
        columns = await self._ch.json_columns(self._sql(
            "SELECT tenant, meter, module, toString(quantity), groupArray(period_from), "
            "groupArray(period_to) FROM (SELECT tenant, period.1 AS period_from, "
            "period.2 AS period_to, meter, module, sum(quantity) AS quantity "
            "FROM (SELECT tenant, meter, module, quantity, arrayJoin(if(empty(periods), "
            "[(assumeNotNull(period_from), assumeNotNull(period_to))], periods)) AS period "
            "FROM (SELECT * FROM invoice_lines WHERE tenant IN {ts:Array(String)} "
            "AND meter != '' AND (period_from >= {first:Date32} OR notEmpty(periods)) "
            "AND (splitByChar('@', meter)[1] IN {ms:Array(String)} OR (meter, "
            "ifNull(module, '')) IN {mms:Array(Tuple(String, String))}) "
            "LIMIT 1 BY number, line_no)) WHERE period.1 >= {first:Date32} "
            "GROUP BY tenant, period.1, period.2, meter, module) "
            "GROUP BY tenant, meter, module, quantity"),
            {"ts": list(tenants), "first": first, "ms": list(meters),
             "mms": list(meter_modules)})
        billed: dict[tuple[str, date, date], dict[tuple[str, str | None], Decimal]] = {}
        days: dict[str, date] = {}
        for tenant, meter, module, text, starts, ends in zip(*columns, strict=True):
            # "1", whatever trailing zeros the server writes (the column has 9 decimals)
            alike = {(meter, module): Decimal(text).normalize()}
            for a, b in zip(starts, ends, strict=True):
                key = (tenant, days.get(a) or days.setdefault(a, date.fromisoformat(a)),
                       days.get(b) or days.setdefault(b, date.fromisoformat(b)))
                found = billed.get(key)
                # another meter of the period: a dict of its own, the shared one unchanged
                billed[key] = alike if found is None else {**found, **alike}
        return billed

    # --- reads: usage (R6.4, R7.2, R9.4) ---------------------------------------------------

    async def now(self) -> datetime:
        rows = await self._rows("SELECT now64(6)")
        return as_utc(rows[0][0])

    async def emails(self, tenants: Sequence[str], start: datetime, end: datetime
                     ) -> dict[str, int]:
        rows = await self._rows(
            "SELECT tenant, sum(toInt128(JSONExtractUInt(data, 'count'))) "
            "FROM (SELECT tenant, data FROM usage_events "
            "WHERE tenant IN {ts:Array(String)} AND type = {type:String} "
            "AND time >= {a:DateTime64(6, 'UTC')} AND time < {b:DateTime64(6, 'UTC')} "
            "LIMIT 1 BY source, id) GROUP BY tenant",
            {"ts": list(tenants), "type": ev.EMAIL_SENT, "a": start, "b": end})
        return {str(t): int(n) for t, n in rows}

    async def support_sessions(self, tenants: Sequence[str], start: datetime, end: datetime
                               ) -> dict[str, list[tuple[str, datetime, int, int]]]:
        """(id, time, minutes, level) of every support session in [start, end) (R8)."""
        rows = await self._rows(
            "SELECT tenant, id, time, JSONExtractInt(data, 'minutes'), "
            "JSONExtractInt(data, 'level') FROM usage_events "
            "WHERE tenant IN {ts:Array(String)} AND type = {type:String} "
            "AND time >= {a:DateTime64(6, 'UTC')} AND time < {b:DateTime64(6, 'UTC')} "
            "LIMIT 1 BY source, id",
            {"ts": list(tenants), "type": ev.SUPPORT_SESSION_COMPLETED, "a": start, "b": end})
        found: dict[str, list[tuple[str, datetime, int, int]]] = defaultdict(list)
        for tenant, event_id, time, minutes, level in rows:
            found[str(tenant)].append((str(event_id), as_utc(time), int(minutes), int(level)))
        return found

    async def access(self, tenants: Sequence[str], end: datetime
                     ) -> dict[str, list[tuple[str, str, datetime, str]]]:
        rows = await self._rows(
            "SELECT tenant, module, user_id, time, type FROM usage_events "
            "WHERE tenant IN {ts:Array(String)} AND type IN {types:Array(String)} "
            "AND time < {b:DateTime64(6, 'UTC')} LIMIT 1 BY source, id",
            {"ts": list(tenants), "types": [ev.USER_ACCESS_GRANTED, ev.USER_ACCESS_REVOKED],
             "b": end})
        found: dict[str, list[tuple[str, str, datetime, str]]] = defaultdict(list)
        for tenant, module, user, time, kind in rows:
            found[str(tenant)].append((str(module), str(user), as_utc(time), str(kind)))
        return found

    async def meter_values(self, meter: Meter, tenants: Sequence[str], start: datetime,
                           end: datetime) -> tuple[dict[str, Decimal], dict[str, Any]]:
        """A non-SEATS meter's value per tenant over [start, end), computed as the usage API
        computes it (`shared.meters.value_expression`, copies counted once), for every tenant
        at once (R10.1); with the query, for the lines' provenance (R9.6)."""
        params: dict[str, Any] = {"ts": list(tenants), "type": meter.event_type, "a": start,
                                  "b": end}
        value = value_expression(meter, params)
        sql = (f"SELECT tenant, {value} FROM (SELECT tenant, time, data FROM usage_events "
               "WHERE tenant IN {ts:Array(String)} AND type = {type:String} "
               "AND time >= {a:DateTime64(6, 'UTC')} AND time < {b:DateTime64(6, 'UTC')} "
               "LIMIT 1 BY source, id) GROUP BY tenant")
        rows = await self._rows(sql, params)
        values = {str(t): Decimal(v).normalize() for t, v in rows if v is not None}
        shown = {k: utc_text(v) if isinstance(v, datetime) else v
                 for k, v in params.items() if k != "ts"}
        return values, {"sql": sql, "params": shown}

    async def late_events(self, tenants: Sequence[str], stored_after: datetime,
                          time_before: datetime, priced_types: Sequence[str] = ()
                          ) -> list[LateEvent]:
        """Usage stored after a cutoff whose time falls before `time_before` (R9.4), of the
        built-in types billed in arrears and of `priced_types` (R10.1); the caller filters
        per tenant cutoff."""
        rows = await self._rows(
            "SELECT tenant, type, time, module, id, stored_at FROM usage_events "
            "WHERE tenant IN {ts:Array(String)} AND type IN {types:Array(String)} "
            "AND stored_at > {c:DateTime64(6, 'UTC')} AND time < {b:DateTime64(6, 'UTC')} "
            "ORDER BY stored_at LIMIT 1 BY source, id",
            {"ts": list(tenants), "c": stored_after, "b": time_before,
             "types": [ev.EMAIL_SENT, ev.USER_ACCESS_GRANTED, ev.USER_ACCESS_REVOKED,
                       ev.SUPPORT_SESSION_COMPLETED, *priced_types]})
        return [LateEvent(str(t), str(k), as_utc(tm), str(m or ""), str(i), as_utc(st))
                for t, k, tm, m, i, st in rows]


# A JSON object given for a String column is kept as its text, as written (compact JSON).
_JSON_OBJECTS_AS_TEXT: Final = {"input_format_json_read_objects_as_strings": 1}


def _line_columns(docs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The documents' lines as `invoice_lines` columns of JSON values, in the table's order:
    the texts the documents hold (amounts, dates) are written as they are, parsed by
    ClickHouse rather than into Decimals and dates first, and each line's source as the
    JSON object it is, which the engine keeps as its text (`_JSON_OBJECTS_AS_TEXT`).
    A run of lines (`_runs`) is one row: its first line, with every period it names in
    `periods` (empty for a line of its own)."""
    rows = [_rows(doc) for doc in docs]
    lines = [line for doc_rows in rows for line in doc_rows]
    periods = [line["period"] or {} for line in lines]
    counts = [len(doc_rows) for doc_rows in rows]
    return {
        "number": _repeated([doc["number"] for doc in docs], counts),
        "tenant": _repeated([doc["tenant"] for doc in docs], counts),
        "issued_at": _repeated([_json_instant(from_utc_text(doc["issued_at"]))
                                for doc in docs], counts),
        "line_no": [n for count in counts for n in range(count)],
        **{name: [line[name] for line in lines] for name in (
            "module", "kind", "description", "quantity", "unit_price", "amount")},
        "period_from": [period.get("from") for period in periods],
        "period_to": [period.get("to") for period in periods],
        "meter": [meter for doc in docs for meter in _meters(doc)],
        "source": [line["source"] for line in lines],
        "periods": [line.get("periods", ()) for line in lines],
    }


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A document's `invoice_lines` rows: its lines, then one per run."""
    runs = doc.get("_runs")
    lines: list[dict[str, Any]] = doc["lines"]
    return [*lines, *(_run_row(run) for run in runs)] if runs else lines


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    """A kept run (`_runs`) as its `invoice_lines` row: its first line, and its periods."""
    return {**run_line(run, *run["periods"][0]), "periods": run["periods"]}


def _meters(doc: dict[str, Any]) -> list[str]:
    """The meter of each of a document's rows ('' for none), lines then runs. A document
    rendered before `_meters` (kept pending across an upgrade) names each line's in its
    `_meter`."""
    meters: list[str] = doc["_meters"] if "_meters" in doc else [
        line.get("_meter", "") for line in doc["lines"]]
    runs = doc.get("_runs")
    return [*meters, *(run["meter"] for run in runs)] if runs else meters


def _repeated(values: list[Any], counts: list[int]) -> list[Any]:
    """Each value as many times as its count."""
    return [value for value, count in zip(values, counts, strict=True) for _ in range(count)]


def _json_instant(instant: datetime) -> str:
    """An instant as a DateTime64(6, 'UTC') column reads it from JSON."""
    return as_utc(instant).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _document(raw: str) -> dict[str, Any]:
    """A stored document as served (`documents.served`). A credit note written before credit
    notes were documents of their own has no lines: it gets the one line it would have
    today."""
    doc: dict[str, Any] = served(orjson.loads(raw))
    if doc.get("kind") == "credit_note" and "lines" not in doc:
        doc["credits"] = doc["invoice"]
        doc["lines"] = [{"module": None, "kind": "credit",
                         "description": f"credit on {doc['invoice']}: {doc.get('reason', '')}",
                         "quantity": "1", "unit_price": doc["subtotal"],
                         "amount": doc["subtotal"], "period": None,
                         "source": {"credits": doc["invoice"], "reason": doc.get("reason")}}]
    return doc
