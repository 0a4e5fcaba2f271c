"""Invoicing's storage: invoices, lines and credit notes in ClickHouse; numbering, billed
marks and pending documents in Redis (docs/invoicing.md, "Storage").

Every ClickHouse value is a bound parameter. Reads of `usage_events` always deduplicate with
`LIMIT 1 BY source, id` (a copy never changes a figure); reads of our own tables keep one
row per number (`LIMIT 1 BY number`), so a re-insert after a crash can never double anything.

Redis layout (prefix `inv`, setting `INVOICING_KEY_PREFIX`):
- `inv:seq:{INV|CN}:{year}`  counter of the year's numbers (R9.3), INCR only inside `_ISSUE`
- `inv:billed:{t}`           hash: billing date → number ('' when nothing was due), `last`
                             (last billed date), `cutoff` (µs, usage read up to, R9.4)
- `inv:events`               hash: subscription event id → number (immediate invoices, R9.2)
- `inv:pending`              hash: number → JSON of a numbered document not yet in ClickHouse
- `inv:credited`             hash: invoice number → minor units credited so far
- `inv:issue-call:{uuid}`, `inv:credit-call:{uuid}`  what one `_ISSUE` / `_CREDIT` call
                             answered (a day), so the client's resend of that call answers
                             the same instead of issuing again or reporting it skipped
- `inv:credit-call:{sha256}` the same for a credit note requested with an Idempotency-Key
                             (number and the request's fingerprint, kept as long as
                             `INVOICING_IDEMPOTENCY_TTL_S`)
- `inv:next`                 sorted set: tenant → µs of its next unbilled billing instant
- `inv:known`                set: tenants indexed in `inv:next`
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, Literal

import orjson
from redis.asyncio import Redis

from shared import events as ev
from shared.clickhouse.client import ClickHouse
from shared.live import TENANT_ZONES_KEY
from shared.times import as_utc, from_utc_text, micros

NUMBER_PLACEHOLDER: Final = "@@NUMBER@@"

# One atomic step per document (R9.3): refuse if the key is already billed, else take the
# next number of the year, keep the full document as pending and mark the key billed. A
# crash after this call leaves a pending document that recovery writes; a crash before it
# leaves nothing. So every number has its document and no key is billed twice (R9.5).
# KEYS[4] marks the call, as for credit notes: a resent call that ran answers as it did.
_ISSUE = """
local done = redis.call('GET', KEYS[4])
if done then return {tonumber(string.sub(done, 1, 1)), string.sub(done, 3)} end
local prev = redis.call('HGET', KEYS[2], ARGV[1])
if prev then return {0, prev} end
local number = ''
if ARGV[4] ~= '1' then
  local n = redis.call('INCR', KEYS[1])
  number = ARGV[2] .. string.format('%06d', n)
  local doc = string.gsub(ARGV[3], '@@NUMBER@@', number)
  redis.call('HSET', KEYS[3], number, doc)
end
redis.call('HSET', KEYS[2], ARGV[1], number)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'last', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'cutoff', ARGV[6]) end
local code = 1
if number == '' then code = 2 end
redis.call('SET', KEYS[4], code .. ':' .. number, 'EX', 86400)
return {code, number}
"""

# A credit note never takes more than what is left to credit (R9.3), checked and counted in
# the same call that numbers it.
# KEYS[4] marks the call, named by a UUID or by the request's Idempotency-Key: a call sent
# again (by the Redis client after a broken connection, or by the API client) answers the
# note the first one issued (code 2, value "number fingerprint"), never another.
_CREDIT = """
local done = redis.call('GET', KEYS[4])
if done then return {2, done} end
local credited = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local total = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
if credited + amount > total then return {0, tostring(total - credited)} end
local n = redis.call('INCR', KEYS[1])
local number = ARGV[4] .. string.format('%06d', n)
local doc = string.gsub(ARGV[5], '@@NUMBER@@', number)
redis.call('HSET', KEYS[3], number, doc)
redis.call('HINCRBY', KEYS[2], ARGV[1], amount)
redis.call('SET', KEYS[4], number .. ' ' .. ARGV[6], 'EX', ARGV[7])
return {1, number}
"""


@dataclass(frozen=True, slots=True)
class CreditRequest:
    """An API request's Idempotency-Key, what its body hashes to, how long to remember it."""

    key: str
    fingerprint: str
    ttl_s: int


@dataclass(frozen=True, slots=True)
class CreditResult:
    outcome: Literal["issued", "refused", "replayed"]
    number: str = ""  # issued, replayed
    left_minor: int = 0  # refused: what is left to credit
    fingerprint: str = ""  # replayed: the first request's


def _credit_result(code: int, value: str) -> CreditResult:
    if code == 1:
        return CreditResult("issued", number=value)
    if code == 0:
        return CreditResult("refused", left_minor=int(value))
    number, _, fingerprint = value.partition(" ")
    return CreditResult("replayed", number=number, fingerprint=fingerprint)


@dataclass(frozen=True, slots=True)
class IssueRequest:
    marker_key: str  # the hash holding the idempotency mark
    field: str  # the billing date, or the event id
    kind: str  # INV
    year: int
    template: bytes  # the document JSON with NUMBER_PLACEHOLDER
    empty: bool = False
    last: str = ""
    cutoff_us: int | None = None


@dataclass(frozen=True, slots=True)
class IssueResult:
    issued: bool
    number: str  # '' when nothing was due


class InvoiceState:
    """The small atomic state in Redis (numbers, billed marks, pending documents)."""

    def __init__(self, redis: Redis, prefix: str = "inv", ent_prefix: str = "ent") -> None:
        self.redis = redis
        self.prefix = prefix
        self.ent_prefix = ent_prefix
        self.pending_key = f"{prefix}:pending"
        self.events_key = f"{prefix}:events"
        self.credited_key = f"{prefix}:credited"
        self.next_key = f"{prefix}:next"
        self.known_key = f"{prefix}:known"
        self._credit = redis.register_script(_CREDIT)

    def seq_key(self, kind: str, year: int) -> str:
        return f"{self.prefix}:seq:{kind}:{year}"

    def billed_key(self, tenant: str) -> str:
        return f"{self.prefix}:billed:{tenant}"

    # --- tenant documents (entitlements', read-only) -------------------------------------

    async def tenant_docs(self, tenants: Sequence[str]) -> list[str | None]:
        if not tenants:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hget(f"{self.ent_prefix}:tenant:{tenant}", "doc")
        return [None if d is None else str(d) for d in await pipe.execute()]

    async def all_tenants(self) -> list[str]:
        """Every tenant entitlements created (it writes `tenant-zones` in the same call)."""
        return sorted(str(t) for t in await self.redis.hkeys(TENANT_ZONES_KEY))

    async def outbox_size(self) -> int:
        return int(await self.redis.xlen(f"{self.ent_prefix}:outbox"))

    # --- the schedule --------------------------------------------------------------------

    async def unindexed(self) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hlen(TENANT_ZONES_KEY)
        pipe.scard(self.known_key)
        total, known = await pipe.execute()
        if int(total) == int(known):
            return []
        tenants = await self.all_tenants()
        members = {str(m) for m in await self.redis.smembers(self.known_key)}
        return [t for t in tenants if t not in members]

    async def set_next(self, items: Sequence[tuple[str, datetime | None]]) -> None:
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant, due in items:
            if due is None:
                pipe.zrem(self.next_key, tenant)
            else:
                pipe.zadd(self.next_key, {tenant: micros(due)})
            pipe.sadd(self.known_key, tenant)
        await pipe.execute()

    async def next_due_us(self) -> int | None:
        first = await self.redis.zrange(self.next_key, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def due_tenants(self, until: datetime) -> list[str]:
        return [str(t) for t in await self.redis.zrangebyscore(self.next_key, "-inf",
                                                               micros(until))]

    async def billed_state(self, tenants: Sequence[str]
                           ) -> list[tuple[date | None, int | None]]:
        """(last billed date, usage cutoff µs) per tenant."""
        if not tenants:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hmget(self.billed_key(tenant), ["last", "cutoff"])
        out: list[tuple[date | None, int | None]] = []
        for last, cutoff in await pipe.execute():
            out.append((None if not last else date.fromisoformat(str(last)),
                        None if not cutoff else int(cutoff)))
        return out

    async def billed_number(self, tenant: str, day: date) -> str | None:
        value = await self.redis.hget(self.billed_key(tenant), day.isoformat())
        return None if value is None else str(value)

    # --- numbering -----------------------------------------------------------------------

    async def issue(self, requests: Sequence[IssueRequest]) -> list[IssueResult]:
        """One atomic `_ISSUE` per document, pipelined (each call stands alone)."""
        if not requests:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for r in requests:
            call = f"{self.prefix}:issue-call:{uuid.uuid4().hex}"
            pipe.eval(_ISSUE, 4, self.seq_key(r.kind, r.year), r.marker_key,
                      self.pending_key, call, r.field, f"{r.kind}-{r.year}-", r.template,
                      "1" if r.empty else "0", r.last,
                      "" if r.cutoff_us is None else str(r.cutoff_us))
        results = await pipe.execute()
        return [IssueResult(int(code) == 1, str(value)) for code, value in results]

    async def credit(self, invoice: str, total_minor: int, amount_minor: int, year: int,
                     template: bytes, request: CreditRequest | None = None) -> CreditResult:
        """Number a credit note if `amount_minor` is still left to credit on `invoice`."""
        call, fingerprint, ttl_s = (self.credit_call_key(invoice, request.key),
                                    request.fingerprint, request.ttl_s) if request else (
            f"{self.prefix}:credit-call:{uuid.uuid4().hex}", "", 86_400)
        code, value = await self._credit(
            keys=[self.seq_key("CN", year), self.credited_key, self.pending_key, call],
            args=[invoice, str(total_minor), str(amount_minor), f"CN-{year}-", template,
                  fingerprint, str(ttl_s)])
        return _credit_result(int(code), str(value))

    def credit_call_key(self, invoice: str, idempotency_key: str) -> str:
        digest = hashlib.sha256(f"{invoice}\x00{idempotency_key}".encode()).hexdigest()
        return f"{self.prefix}:credit-call:{digest}"

    async def credit_replay(self, invoice: str, idempotency_key: str) -> CreditResult | None:
        """What an earlier request with this Idempotency-Key was answered, if any."""
        done = await self.redis.get(self.credit_call_key(invoice, idempotency_key))
        return None if done is None else _credit_result(2, str(done))

    async def credited_minor(self, invoice: str) -> int:
        return int(await self.redis.hget(self.credited_key, invoice) or 0)

    async def pending(self) -> dict[str, bytes]:
        raw = await self.redis.hgetall(self.pending_key)
        return {str(k): str(v).encode() for k, v in raw.items()}

    async def clear_pending(self, numbers: Sequence[str]) -> None:
        if numbers:
            await self.redis.hdel(self.pending_key, *numbers)

    async def pending_doc(self, number: str) -> bytes | None:
        raw = await self.redis.hget(self.pending_key, number)
        return None if raw is None else str(raw).encode()


INVOICE_COLUMNS: Final = ("number", "tenant", "kind", "issued_at", "billing_date",
                          "period_from", "period_to", "currency", "subtotal", "tax", "total",
                          "usage_cutoff", "doc")
LINE_COLUMNS: Final = ("number", "tenant", "issued_at", "line_no", "module", "kind",
                       "description", "quantity", "unit_price", "amount", "period_from",
                       "period_to", "meter", "source")
CREDIT_COLUMNS: Final = ("number", "invoice", "tenant", "issued_at", "amount", "doc")


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
        for table in ("invoices", "invoice_lines", "credit_notes"):
            await self._ch.command(
                f"CREATE TABLE IF NOT EXISTS {self._db}.{table} AS default.{table}")

    async def _rows(self, sql: str, params: dict[str, Any] | None = None
                    ) -> list[tuple[Any, ...]]:
        return await self._ch.rows(self._sql(sql), params)

    def _sql(self, sql: str) -> str:
        return (sql.replace("FROM invoices", f"FROM {self.t_invoices}")
                .replace("FROM invoice_lines", f"FROM {self.t_lines}")
                .replace("FROM credit_notes", f"FROM {self.t_credits}"))

    # --- writes --------------------------------------------------------------------------

    async def insert_documents(self, docs: Sequence[dict[str, Any]]) -> None:
        invoices = [d for d in docs if d["kind"] != "credit_note"]
        credits = [d for d in docs if d["kind"] == "credit_note"]
        if invoices:
            token = "inv:" + ",".join(sorted(d["number"] for d in invoices))
            lines = [(d, i, line) for d in invoices for i, line in enumerate(d["lines"])]
            if lines:
                await self._ch.insert_columns(self.t_lines, LINE_COLUMNS, [
                    [d["number"] for d, _, _ in lines],
                    [d["tenant"] for d, _, _ in lines],
                    [from_utc_text(d["issued_at"]) for d, _, _ in lines],
                    [i for _, i, _ in lines],
                    [line["module"] for _, _, line in lines],
                    [line["kind"] for _, _, line in lines],
                    [line["description"] for _, _, line in lines],
                    [Decimal(line["quantity"]) for _, _, line in lines],
                    [Decimal(line["unit_price"]) for _, _, line in lines],
                    [Decimal(line["amount"]) for _, _, line in lines],
                    [_date((line["period"] or {}).get("from")) for _, _, line in lines],
                    [_date((line["period"] or {}).get("to")) for _, _, line in lines],
                    [line.get("_meter", "") for _, _, line in lines],
                    [orjson.dumps(line["source"]).decode() for _, _, line in lines],
                ], settings={"insert_deduplication_token": token + ":lines"})
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
                [orjson.dumps(_public(d)).decode() for d in invoices],
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
        rows = await self._rows(
            "SELECT doc FROM invoices WHERE number = {n:String} LIMIT 1", {"n": number})
        return None if not rows else dict(orjson.loads(rows[0][0]))

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
        return None if not rows else dict(orjson.loads(rows[0][0]))

    async def list_invoices(self, month: tuple[datetime, datetime] | None, tenant: str | None,
                            status: str | None, cursor: tuple[datetime, str] | None,
                            limit: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        where = ["1"]
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
        return [dict(orjson.loads(doc)) for doc, _ in rows]

    async def month_lines(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT doc FROM (SELECT number, issued_at, doc FROM invoices "
            "WHERE issued_at >= {a:DateTime64(6, 'UTC')} AND issued_at < "
            "{b:DateTime64(6, 'UTC')} LIMIT 1 BY number) ORDER BY issued_at, number",
            {"a": start, "b": end})
        return [dict(orjson.loads(doc)) for (doc,) in rows]

    async def billed_quantities(self, tenant: str, periods: Sequence[tuple[date, date]]
                                ) -> dict[tuple[date, date, str, str | None], Decimal]:
        """Quantity billed so far per (period, meter, module): arrears lines plus earlier
        adjustments for the same period (R9.4)."""
        if not periods:
            return {}
        rows = await self._rows(
            "SELECT period_from, period_to, meter, module, sum(quantity) FROM "
            "(SELECT * FROM invoice_lines WHERE tenant = {t:String} AND meter != '' "
            "AND (period_from, period_to) IN {ps:Array(Tuple(Date32, Date32))} "
            "LIMIT 1 BY number, line_no) GROUP BY period_from, period_to, meter, module",
            {"t": tenant, "ps": list(periods)})
        return {(_as_date(a), _as_date(b), str(m), None if mod is None else str(mod)):
                Decimal(q) for a, b, m, mod, q in rows}

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

    async def late_events(self, tenants: Sequence[str], stored_after: datetime,
                          time_before: datetime) -> list[tuple[str, str, datetime, str, str,
                                                                datetime]]:
        """(tenant, type, time, source, id, stored_at) of usage stored after a cutoff whose
        time falls before `time_before` (R9.4); the caller filters per tenant cutoff."""
        rows = await self._rows(
            "SELECT tenant, type, time, source, id, stored_at FROM usage_events "
            "WHERE tenant IN {ts:Array(String)} AND type IN {types:Array(String)} "
            "AND stored_at > {c:DateTime64(6, 'UTC')} AND time < {b:DateTime64(6, 'UTC')} "
            "ORDER BY stored_at LIMIT 1 BY source, id",
            {"ts": list(tenants), "c": stored_after, "b": time_before,
             "types": [ev.EMAIL_SENT, ev.USER_ACCESS_GRANTED, ev.USER_ACCESS_REVOKED,
                       ev.SUPPORT_SESSION_COMPLETED]})
        return [(str(t), str(k), as_utc(tm), str(s), str(i), as_utc(st))
                for t, k, tm, s, i, st in rows]


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as served: internal keys (leading underscore) dropped."""
    out = {k: v for k, v in doc.items() if not k.startswith("_")}
    out["lines"] = [{k: v for k, v in line.items() if not k.startswith("_")}
                    for line in doc.get("lines", [])]
    return out
