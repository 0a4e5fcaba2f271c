"""Invoicing's small atomic state in Redis: numbers, billed marks, pending documents and
the billing schedule (docs/invoicing.md, "Storage"). The documents themselves live in
ClickHouse (store.py).

The keys (`shared.keys.InvoicingKeys`, prefix `INVOICING_KEY_PREFIX`) and what each holds:
- `sequence_prefix(kind)` + year  counter of that accounting year's numbers (R9.3), INCR only
                       inside `_ISSUE` and `_CREDIT`
- `last_issued(kind)`  "µs year text" of the kind's latest document: numbers are chronological
- `billed(t)`          hash: billing date → number ('' when nothing was due), `last`
                       (last billed date), `cutoff` (µs, usage read up to, R9.4)
- `events`             hash: subscription event id → number (immediate invoices, R9.2)
- `pending`            hash: number → JSON of a numbered document not yet in ClickHouse
- `credited`           hash: invoice number → minor units credited so far
- `declined`           hash: purchase event id → a declined support renewal whose invoice is
                       to be credited, kept until it is (R8.6, declines.py)
- `issue_call`, `credit_call`  what one `_ISSUE` / `_CREDIT` call answered (a day), so the
                       client's resend of that call answers the same instead of issuing
                       again or reporting it skipped; for a credit note requested with an
                       Idempotency-Key, kept as long as `INVOICING_IDEMPOTENCY_TTL_S`
- `next`               sorted set: tenant → µs of its next unbilled billing instant
- `known`              set: tenants indexed in `next`
- `ended`              set: tenants whose subscription ended and whose last billing date is
                       invoiced: their late usage gets an invoice of its own (R9.4)
- `sweep`              µs of the platform clock when `ended` is next looked at (daily)
- `outbox`             stream of `invoice.issued` / `credit_note.issued` events not yet
                       published (`shared.outbox`), appended by the call that numbers the
                       document they announce; `outbox_lease` the publisher's lease
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from shared.keys import TENANT_ZONES, EntitlementsKeys, InvoicingKeys
from shared.subscription import TenantState, read_documents
from shared.times import micros, utc_text

NUMBER_PLACEHOLDER: Final = "@@NUMBER@@"
ISSUED_AT_PLACEHOLDER: Final = "@@ISSUED_AT@@"

# The next number of a kind's sequence, chronologically (R9.3): a document is never issued
# earlier than the one numbered before it. Its issue instant is the one asked for (`at`, µs)
# unless the last document of the kind was issued later (a purchase event read after a billing
# run, a replica whose clock lags): then it is issued at that same instant, in that instant's
# accounting year. `last` holds "µs year text" of the kind's latest document.
_TAKE_NUMBER = """
local function take_number(last_key, seq_prefix, kind_prefix, at, year, text)
  local last = redis.call('GET', last_key)
  if last then
    local lus, lyear, ltext = string.match(last, '^(%d+) (%d+) (.+)$')
    if tonumber(lus) > at then at, year, text = tonumber(lus), lyear, ltext end
  end
  local n = redis.call('INCR', seq_prefix .. year)
  redis.call('SET', last_key, string.format('%.0f', at) .. ' ' .. year .. ' ' .. text)
  return kind_prefix .. year .. '-' .. string.format('%06d', n), text
end
-- Only the placeholders standing as whole JSON values of their own keys are filled: text a
-- user wrote (a credit note's reason) is escaped JSON and can never match them.
local function fill(template, number, text)
  local doc = string.gsub(template, '"number":"@@NUMBER@@"', '"number":"' .. number .. '"', 1)
  doc = string.gsub(doc, '"issued_at":"@@ISSUED_AT@@"', '"issued_at":"' .. text .. '"', 1)
  return doc
end
-- The document's announcement (announce.py) joins invoicing's outbox in the numbering call:
-- one event, one id, per number, whatever crash follows.
local function announce(outbox, template, event_id, tenant, number, text)
  local event = fill(template, number, text)
  event = string.gsub(event, '"time":"@@ISSUED_AT@@"', '"time":"' .. text .. '"', 1)
  redis.call('XADD', outbox, '*', 'id', event_id, 'key', tenant, 'value', event)
end
"""

# One atomic step per document (R9.3): refuse if the key is already billed, else take the
# next number, keep the full document as pending and mark the key billed. A crash after this
# call leaves a pending document that recovery writes; a crash before it leaves nothing. So
# every number has its document and no key is billed twice (R9.5).
# KEYS[3] marks the call, as for credit notes: a resent call that ran answers as it did.
_ISSUE = _TAKE_NUMBER + """
local done = redis.call('GET', KEYS[3])
if done then return {tonumber(string.sub(done, 1, 1)), string.sub(done, 3)} end
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev then return {0, prev} end
local number, text = '', ''
if ARGV[4] ~= '1' then
  number, text = take_number(KEYS[4], ARGV[10], ARGV[2], tonumber(ARGV[7]), ARGV[8], ARGV[9])
  redis.call('HSET', KEYS[2], number, fill(ARGV[3], number, text))
  announce(KEYS[5], ARGV[11], ARGV[12], ARGV[13], number, text)
end
redis.call('HSET', KEYS[1], ARGV[1], number)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'last', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'cutoff', ARGV[6]) end
local code = 1
if number == '' then code = 2 end
redis.call('SET', KEYS[3], code .. ':' .. number, 'EX', 86400)
return {code, number, text}
"""

# A credit note never takes more than what is left to credit (R9.3), checked and counted in
# the same call that numbers it, on its own chronological sequence (R9.7).
# KEYS[3] marks the call, named by a UUID or by the request's Idempotency-Key: a call sent
# again (by the Redis client after a broken connection, or by the API client) answers the
# note the first one issued (code 2, value "number fingerprint"), never another.
_CREDIT = _TAKE_NUMBER + """
local done = redis.call('GET', KEYS[3])
if done then return {2, done} end
local credited = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local total = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
if credited + amount > total then return {0, tostring(total - credited)} end
local number, text = take_number(KEYS[4], ARGV[10], 'CN-', tonumber(ARGV[7]), ARGV[8],
                                 ARGV[9])
redis.call('HSET', KEYS[2], number, fill(ARGV[4], number, text))
announce(KEYS[5], ARGV[11], ARGV[12], ARGV[13], number, text)
redis.call('HINCRBY', KEYS[1], ARGV[1], amount)
redis.call('SET', KEYS[3], number .. ' ' .. ARGV[5], 'EX', ARGV[6])
return {1, number, text}
"""


@dataclass(frozen=True, slots=True)
class CreditRequest:
    """An API request's Idempotency-Key, what its body hashes to, how long to remember it."""

    key: str
    fingerprint: str
    ttl_s: int


@dataclass(frozen=True, slots=True)
class Announcement:
    """The event announcing a document (announce.py): its id, its tenant (the Kafka key)
    and its template, filled with the number and issue instant as the document is."""

    event_id: str
    tenant: str
    template: bytes


@dataclass(frozen=True, slots=True)
class CreditResult:
    outcome: Literal["issued", "refused", "replayed"]
    number: str = ""  # issued, replayed
    left_minor: int = 0  # refused: what is left to credit
    fingerprint: str = ""  # replayed: the first request's
    issued_at: str = ""  # issued: the instant it was issued at (R9.3)


def _credit_result(code: int, value: str, issued_at: str = "") -> CreditResult:
    if code == 1:
        return CreditResult("issued", number=value, issued_at=issued_at)
    if code == 0:
        return CreditResult("refused", left_minor=int(value))
    number, _, fingerprint = value.partition(" ")
    return CreditResult("replayed", number=number, fingerprint=fingerprint)


@dataclass(frozen=True, slots=True)
class IssueRequest:
    marker_key: str  # the hash holding the idempotency mark
    field: str  # the billing date, or the event id
    kind: str  # INV
    issued_at: datetime  # asked for; a later one if the sequence is already past it
    template: bytes  # the document JSON with NUMBER_PLACEHOLDER and ISSUED_AT_PLACEHOLDER
    announcement: Announcement
    empty: bool = False
    last: str = ""
    cutoff_us: int | None = None


@dataclass(frozen=True, slots=True)
class IssueResult:
    issued: bool
    number: str  # '' when nothing was due
    # The issue instant (text) the numbering call filled the document with; '' when it did
    # not issue, or when the answer is that of an earlier run of the same call.
    issued_at: str = ""


def _announced(announcement: Announcement) -> tuple[bytes, str, str]:
    """ARGV[11..13] of the numbering scripts."""
    return announcement.template, announcement.event_id, announcement.tenant


class InvoiceState:
    """The small atomic state in Redis (numbers, billed marks, pending documents)."""

    def __init__(self, redis: Redis, keys: InvoicingKeys, tenants: EntitlementsKeys,
                 accounting_zone: ZoneInfo,
                 announced: Callable[[], None] = lambda: None) -> None:
        self.redis = redis
        # Called once a numbering call may have appended to the outbox: wakes its publisher.
        self.announced = announced
        self.keys = keys
        self.tenants = tenants
        self.accounting_zone = accounting_zone
        self._credit = redis.register_script(_CREDIT)

    # --- tenant documents (entitlements', read-only) -------------------------------------

    async def tenant_documents(self, tenants: Sequence[str]) -> dict[str, TenantState]:
        return await read_documents(self.redis, self.tenants, tenants)

    async def all_tenants(self) -> list[str]:
        """Every tenant entitlements created (it writes `tenant-zones` in the same call)."""
        return sorted(str(t) for t in await self.redis.hkeys(TENANT_ZONES))

    async def outbox_size(self) -> int:
        return int(await self.redis.xlen(self.tenants.outbox))

    # --- the schedule --------------------------------------------------------------------

    async def unindexed(self) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hlen(TENANT_ZONES)
        pipe.scard(self.keys.known)
        total, known = await pipe.execute()
        if int(total) == int(known):
            return []
        tenants = await self.all_tenants()
        members = {str(m) for m in await self.redis.smembers(self.keys.known)}
        return [t for t in tenants if t not in members]

    async def set_next(self, items: Sequence[tuple[str, datetime | None]]) -> None:
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant, due in items:
            if due is None:
                pipe.zrem(self.keys.next, tenant)
            else:
                pipe.zadd(self.keys.next, {tenant: micros(due)})
            pipe.sadd(self.keys.known, tenant)
        await pipe.execute()

    async def mark_ended(self, tenants: Sequence[str]) -> None:
        if tenants:
            await self.redis.sadd(self.keys.ended, *tenants)

    async def ended_tenants(self) -> list[str]:
        return sorted(str(t) for t in await self.redis.smembers(self.keys.ended))

    async def sweep_due_us(self) -> int | None:
        """When ended subscriptions are next looked at (0: now), or None with none."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(self.keys.ended)
        pipe.get(self.keys.sweep)
        ended, due = await pipe.execute()
        if not int(ended):
            return None
        return int(due) if due is not None else 0

    async def set_sweep(self, due: datetime) -> None:
        await self.redis.set(self.keys.sweep, micros(due))

    async def next_due_us(self) -> int | None:
        first = await self.redis.zrange(self.keys.next, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def due_tenants(self, until: datetime) -> list[str]:
        return [str(t) for t in await self.redis.zrangebyscore(self.keys.next, "-inf",
                                                               micros(until))]

    async def billed_state(self, tenants: Sequence[str]
                           ) -> list[tuple[date | None, int | None]]:
        """(last billed date, usage cutoff µs) per tenant."""
        if not tenants:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hmget(self.keys.billed(tenant), ["last", "cutoff"])
        out: list[tuple[date | None, int | None]] = []
        for last, cutoff in await pipe.execute():
            out.append((None if not last else date.fromisoformat(str(last)),
                        None if not cutoff else int(cutoff)))
        return out

    async def billed_numbers(self, tenants: Sequence[str], day: date
                             ) -> dict[str, str | None]:
        """Per tenant, the number of the invoice of its billing date `day`, or None."""
        pipe = self.redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hget(self.keys.billed(tenant), day.isoformat())
        values = await pipe.execute() if tenants else []
        return {tenant: None if value is None else str(value)
                for tenant, value in zip(tenants, values, strict=True)}

    # --- numbering -----------------------------------------------------------------------

    async def issue(self, requests: Sequence[IssueRequest]) -> list[IssueResult]:
        """One atomic `_ISSUE` per document, pipelined (each call stands alone)."""
        if not requests:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for r in requests:
            call = self.keys.issue_call(uuid.uuid4().hex)
            pipe.eval(_ISSUE, 5, r.marker_key, self.keys.pending, call,
                      self.keys.last_issued(r.kind), self.keys.outbox, r.field,
                      f"{r.kind}-", r.template, "1" if r.empty else "0", r.last,
                      "" if r.cutoff_us is None else str(r.cutoff_us),
                      *self._instant(r.issued_at), self.keys.sequence_prefix(r.kind),
                      *_announced(r.announcement))
        results = await pipe.execute()
        self.announced()
        return [IssueResult(int(reply[0]) == 1, str(reply[1]),
                            str(reply[2]) if len(reply) > 2 else "") for reply in results]

    async def credit(self, invoice: str, total_minor: int, amount_minor: int,
                     issued_at: datetime, template: bytes, announcement: Announcement,
                     request: CreditRequest | None = None) -> CreditResult:
        """Number a credit note if `amount_minor` is still left to credit on `invoice`."""
        call, fingerprint, ttl_s = (self.keys.credit_call(invoice, request.key),
                                    request.fingerprint, request.ttl_s) if request else (
            self.keys.credit_call(invoice, uuid.uuid4().hex), "", 86_400)
        reply = await self._credit(
            keys=[self.keys.credited, self.keys.pending, call, self.keys.last_issued("CN"),
                  self.keys.outbox],
            args=[invoice, str(total_minor), str(amount_minor), template, fingerprint,
                  str(ttl_s), *self._instant(issued_at), self.keys.sequence_prefix("CN"),
                  *_announced(announcement)])
        self.announced()
        return _credit_result(int(reply[0]), str(reply[1]),
                              str(reply[2]) if len(reply) > 2 else "")

    def _instant(self, issued_at: datetime) -> tuple[str, str, str]:
        """(µs, accounting year, text) of an issue instant, as the numbering script takes
        them: the year of a number is the calendar year in the accounting zone (R9.3)."""
        return (str(micros(issued_at)), str(issued_at.astimezone(self.accounting_zone).year),
                utc_text(issued_at))

    async def credit_replay(self, invoice: str, idempotency_key: str) -> CreditResult | None:
        """What an earlier request with this Idempotency-Key was answered, if any."""
        done = await self.redis.get(self.keys.credit_call(invoice, idempotency_key))
        return None if done is None else _credit_result(2, str(done))

    async def credited_minor(self, invoice: str) -> int:
        return int(await self.redis.hget(self.keys.credited, invoice) or 0)

    async def pending(self) -> dict[str, bytes]:
        raw = await self.redis.hgetall(self.keys.pending)
        return {str(k): str(v).encode() for k, v in raw.items()}

    async def pending_of(self, numbers: Sequence[str]) -> dict[str, bytes]:
        """The pending documents of `numbers` (those still pending)."""
        if not numbers:
            return {}
        raw = await self.redis.hmget(self.keys.pending, list(numbers))
        return {n: str(v).encode() for n, v in zip(numbers, raw, strict=True) if v is not None}

    async def clear_pending(self, numbers: Sequence[str]) -> None:
        if numbers:
            await self.redis.hdel(self.keys.pending, *numbers)

    async def keep_decline(self, purchase: str, note: bytes) -> None:
        """A declined renewal waits under its invoice's purchase event id until credited."""
        await self.redis.hset(self.keys.declined, purchase, note)

    async def waiting_decline(self, purchase: str) -> bytes | None:
        raw = await self.redis.hget(self.keys.declined, purchase)
        return None if raw is None else str(raw).encode()

    async def forget_decline(self, purchase: str) -> None:
        await self.redis.hdel(self.keys.declined, purchase)

    async def invoice_of_event(self, event_id: str) -> str | None:
        """The number of the immediate invoice of a subscription event ('' when it charged
        nothing), or None before it is issued."""
        number = await self.redis.hget(self.keys.events, event_id)
        return None if number is None else str(number)

    async def pending_doc(self, number: str) -> bytes | None:
        raw = await self.redis.hget(self.keys.pending, number)
        return None if raw is None else str(raw).encode()


