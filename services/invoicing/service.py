"""The billing run, late-usage adjustments, issue and numbering, credit notes, finance reads.

Issue path of every document (docs/invoicing.md, "Numbers and crashes"):
1. compose a draft from the tenant document and the usage (pure: services.invoicing.compose);
2. one Lua call per document: refuse an already billed key (R9.5), take the year's next
   number (R9.3), keep the full document as pending, mark the key billed;
3. insert the documents into ClickHouse (deduplicated on read by number);
4. drop them from pending.
`recover()` (at start and before every run) re-does 3-4 for anything left pending, so a
crash anywhere leaves either nothing or a numbered document that will be written, once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson

from services.invoicing import compose
from services.invoicing.models import CSV_COLUMNS, Draft, Line, LineKind, period_json
from services.invoicing.store import (
    NUMBER_PLACEHOLDER,
    CreditRequest,
    CreditResult,
    InvoiceState,
    InvoiceStore,
    IssueRequest,
    decode_cursor,
    encode_cursor,
)
from shared import events as ev
from shared.billing.money import (
    format_money,
    invoice_totals,
    minor_unit,
    parse_money,
    round_fraction,
)
from shared.billing.periods import Cycle, Period, local_date, period_containing
from shared.catalog import Catalog, UnknownCatalogItem
from shared.clock import Clock
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.settings import InvoicingSettings
from shared.subscription import TenantState
from shared.times import from_micros, micros, parse_instant, utc_month, utc_text

log = logging.getLogger(__name__)

PAGE_SIZE = 100
STATUSES = ("issued", "partially_credited", "credited")


@dataclass(slots=True)
class _Work:
    view: TenantState
    last: date | None
    cutoff_us: int | None


@dataclass(frozen=True, slots=True)
class RunResult:
    issued: list[str]
    skipped: list[str]


def render(draft: Draft, issued_at: datetime, number: str) -> dict[str, Any]:
    """The invoice document (docs/api.md "Invoice"), lines sorted by module (R9.1), totals R3.2."""
    lines = sorted(draft.lines, key=Line.sort_key)
    totals = invoice_totals([line.amount for line in lines], draft.vat_rate, draft.currency)
    rendered = []
    for line in lines:
        item = line.public(draft.currency)
        item["_meter"] = line.meter
        rendered.append(item)
    return {
        "number": number, "kind": draft.kind, "tenant": draft.tenant,
        "issued_at": utc_text(issued_at), "billing_date": None if draft.billing_date is None
        else draft.billing_date.isoformat(),
        "period": period_json(draft.period), "currency": draft.currency,
        "vat_rate": format(draft.vat_rate, "f"), "lines": rendered,
        "subtotal": format_money(totals.subtotal, draft.currency),
        "tax": format_money(totals.tax, draft.currency),
        "total": format_money(totals.total, draft.currency),
        "usage_cutoff": None if draft.usage_cutoff is None else utc_text(draft.usage_cutoff),
        **draft.extra,
    }


class InvoicingService:
    def __init__(self, state: InvoiceState, store: InvoiceStore, catalog: Catalog,
                 clock: Clock, settings: InvoicingSettings) -> None:
        self.state = state
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.settings = settings

    # --- recovery and the schedule ---------------------------------------------------------

    async def recover(self) -> int:
        """Write every numbered document still pending (a crash between numbering and
        ClickHouse), then forget it. Idempotent: reads keep one row per number."""
        pending = await self.state.pending()
        if not pending:
            return 0
        docs = [dict(orjson.loads(raw)) for raw in pending.values()]
        await self.store.insert_documents(docs)
        await self.state.clear_pending(list(pending))
        log.info("recovered %d pending invoice(s)", len(docs))
        return len(docs)

    async def views(self, tenants: Sequence[str]) -> dict[str, TenantState]:
        docs = await self.state.tenant_docs(tenants)
        return {t: TenantState.model_validate_json(d) for t, d in zip(tenants, docs, strict=True)
                if d is not None}

    async def sync_index(self, tenants: Sequence[str] | None = None) -> None:
        """Index the next billing instant of tenants not indexed yet (or of `tenants`)."""
        todo = list(tenants) if tenants is not None else await self.state.unindexed()
        for start in range(0, len(todo), 5_000):
            chunk = todo[start:start + 5_000]
            views = await self.views(chunk)
            billed = await self.state.billed_state(chunk)
            items: list[tuple[str, datetime | None]] = []
            for tenant, (last, _) in zip(chunk, billed, strict=True):
                view = views.get(tenant)
                nd = None if view is None else compose.next_billing_date(view, last)
                items.append((tenant, None if nd is None or view is None
                              else compose.billing_instant(view, nd)))
            await self.state.set_next(items)

    async def next_due(self) -> datetime | None:
        await self.sync_index()
        due_us = await self.state.next_due_us()
        return None if due_us is None else from_micros(due_us)

    async def run_due(self, now: datetime) -> RunResult:
        tenants = await self.state.due_tenants(now)
        return await self.bill(tenants, now)

    # --- billing runs (R9.1, R9.5) -----------------------------------------------------------

    async def billing_run(self, day: date | None, tenant: str | None) -> dict[str, Any]:
        """`POST /v1/billing-runs`: bill every tenant whose billing date is `day` (and any
        earlier date of theirs still unbilled, in order); already billed → skipped."""
        now = await self.clock.now()
        day = day or now.astimezone(UTC).date()
        if day > (now + timedelta(hours=14)).date():
            raise ValidationFailed(f"date: {day} has not started anywhere yet (now is "
                                   f"{utc_text(now)})", field="date")
        if tenant is not None:
            tenants = [tenant]
            if not (await self.views(tenants)):
                raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        else:
            tenants = await self.state.all_tenants()
        issued: list[str] = []
        skipped: list[str] = []
        for start in range(0, len(tenants), self.settings.invoicing_batch_tenants):
            chunk = tenants[start:start + self.settings.invoicing_batch_tenants]
            views = await self.views(chunk)
            targets: list[str] = []
            for name, view in views.items():
                if not self._is_billing_date(view, day):
                    continue
                if await self.state.billed_number(name, day) is not None:
                    skipped.append(name)
                elif compose.billing_instant(view, day) <= now:
                    targets.append(name)
            if targets:
                result = await self.bill(targets, now, up_to=day)
                issued.extend(result.issued)
                skipped.extend(result.skipped)
        return {"date": day.isoformat(), "issued": issued, "skipped": sorted(set(skipped))}

    def _is_billing_date(self, view: TenantState, day: date) -> bool:
        if day < view.anchor:
            return False
        last = compose.last_billing_date(view)
        if last is not None and day > last:
            return False
        return period_containing(view.anchor, Cycle(view.cycle), day).start == day

    async def bill(self, tenants: Sequence[str], until: datetime,
                   up_to: date | None = None) -> RunResult:
        """Issue, in date order, every billing date of `tenants` due by `until`."""
        await self.recover()
        issued: list[str] = []
        skipped: list[str] = []
        batch = self.settings.invoicing_batch_tenants
        for start in range(0, len(tenants), batch):
            chunk = list(tenants[start:start + batch])
            views = await self.views(chunk)
            billed = await self.state.billed_state(chunk)
            work = {t: _Work(views[t], last, cutoff)
                    for t, (last, cutoff) in zip(chunk, billed, strict=True) if t in views}
            while True:
                todo: list[tuple[str, date]] = []
                for name, item in work.items():
                    nd = compose.next_billing_date(item.view, item.last)
                    if nd is None or compose.billing_instant(item.view, nd) > until:
                        continue
                    if up_to is not None and nd > up_to:
                        continue
                    todo.append((name, nd))
                if not todo:
                    break
                drafts = await self.compose(
                    [(work[n].view, d, work[n].cutoff_us, work[n].last) for n, d in todo])
                numbers, was_billed = await self._issue(drafts, until)
                issued.extend(numbers)
                skipped.extend(was_billed)
                for draft in drafts:
                    item = work[draft.tenant]
                    item.last = draft.billing_date
                    if draft.usage_cutoff is not None and draft.kind == "period":
                        item.cutoff_us = micros(draft.usage_cutoff)
                if was_billed:  # someone else got there first: re-read their marks
                    fresh = await self.state.billed_state(was_billed)
                    for name, (last, cutoff) in zip(was_billed, fresh, strict=True):
                        work[name].last, work[name].cutoff_us = last, cutoff
            await self.sync_index(chunk)
        return RunResult(issued, skipped)

    async def _issue(self, drafts: Sequence[Draft], issued_at: datetime
                     ) -> tuple[list[str], list[str]]:
        requests: list[IssueRequest] = []
        for draft in drafts:
            doc = render(draft, issued_at, NUMBER_PLACEHOLDER)
            requests.append(IssueRequest(
                marker_key=self.state.billed_key(draft.tenant) if draft.billing_date
                else self.state.events_key, field=draft.key, kind="INV",
                year=issued_at.astimezone(UTC).year, template=orjson.dumps(doc),
                empty=not draft.lines,
                last="" if draft.billing_date is None else draft.billing_date.isoformat(),
                cutoff_us=None if draft.usage_cutoff is None or draft.kind != "period"
                else micros(draft.usage_cutoff)))
        results = await self.state.issue(requests)
        numbers = [r.number for r in results if r.issued]
        skipped = [d.tenant for d, r in zip(drafts, results, strict=True)
                   if not r.issued and r.number != "" and d.billing_date is not None]
        if numbers:
            pending = await self.state.pending()
            docs = [dict(orjson.loads(pending[n])) for n in numbers if n in pending]
            await self.store.insert_documents(docs)
            await self.state.clear_pending([d["number"] for d in docs])
        return numbers, skipped

    # --- composition --------------------------------------------------------------------------

    async def compose(self, todo: Sequence[tuple[TenantState, date, int | None, date | None]]
                      ) -> list[Draft]:
        """Drafts for (tenant, billing date), usage read in one query per period window."""
        cutoff = await self.store.now()  # R9.4: rows stored after this are "late" next time
        drafts: list[Draft] = []
        groups: dict[tuple[datetime, datetime], list[tuple[TenantState, date, Period]]] = \
            defaultdict(list)
        for view, day, _, _ in todo:
            ended = compose.ended_period(view, day)
            if ended is None:  # R9.1: the first period, in advance, when it starts
                period = period_containing(view.anchor, Cycle(view.cycle), day)
                drafts.append(Draft(
                    tenant=view.id, kind="immediate", currency=view.currency,
                    vat_rate=view.vat_rate, period=period,
                    lines=compose.advance_lines(view, self.catalog, period), billing_date=day,
                    usage_cutoff=cutoff, key=day.isoformat()))
                continue
            zone = view.zone
            groups[(ended.start_instant(zone), ended.end_instant(zone))].append(
                (view, day, ended))
        cutoffs = {view.id: c for view, _, c, _ in todo}
        for (start, end), members in groups.items():
            names = [view.id for view, _, _ in members]
            emails = await self.store.emails(names, start, end)
            access = await self.store.access(names, end)
            since = min(compose.billing_instant(v, compose.support_since(v, e))
                        for v, _, e in members)  # R8.2: banks are used from their start
            support = await self.store.support_sessions(names, min(since, start), end)
            late = await self._late(members, cutoffs)
            for view, day, ended in members:
                usage = compose.PeriodUsage(
                    emails=emails.get(view.id, 0), access=access.get(view.id, []),
                    email_query=_email_query(view.id, start, end),
                    access_query=_access_query(view.id, end),
                    support=support.get(view.id, []),
                    support_query=_support_query(view.id, min(since, start), end))
                lines = compose.arrears_lines(view, self.catalog, ended, usage)
                lines.extend(await self._adjustments(view, ended, late.get(view.id, [])))
                renews = compose.renews_at(view, day)
                period = ended
                if renews:
                    period = period_containing(view.anchor, Cycle(view.cycle), day)
                    lines.extend(compose.advance_lines(view, self.catalog, period))
                drafts.append(Draft(
                    tenant=view.id, kind="period", currency=view.currency,
                    vat_rate=view.vat_rate, period=period, lines=lines, billing_date=day,
                    usage_cutoff=cutoff, key=day.isoformat()))
        return drafts

    async def _late(self, members: Sequence[tuple[TenantState, date, Period]],
                    cutoffs: dict[str, int | None]
                    ) -> dict[str, list[tuple[str, datetime, str]]]:
        """Per tenant: (type, time, id) of usage stored after its last period invoice read
        usage, whose time falls in a period already billed (R9.4)."""
        known = [(v, e) for v, _, e in members if cutoffs.get(v.id) is not None]
        if not known:
            return {}
        since = min(from_micros(cutoffs[v.id] or 0) for v, _ in known)
        before = max(e.start_instant(v.zone) for v, e in known)
        rows = await self.store.late_events([v.id for v, _ in known], since, before)
        by_tenant = {v.id: (v, e) for v, e in known}
        late: dict[str, list[tuple[str, datetime, str]]] = defaultdict(list)
        for tenant, kind, time, _source, event_id, stored_at in rows:
            view, ended = by_tenant[tenant]
            if stored_at <= from_micros(cutoffs[tenant] or 0):
                continue
            if time >= ended.start_instant(view.zone) \
                    or time < compose.billing_instant(view, view.anchor):
                continue
            late[tenant].append((kind, time, event_id))
        return late

    async def _adjustments(self, view: TenantState, ended: Period,
                           late: Sequence[tuple[str, datetime, str]]) -> list[Line]:
        if not late:
            return []
        zone = view.zone
        periods: set[Period] = set()
        ids: dict[Period, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for kind, time, event_id in late:
            day = local_date(time, zone)
            if kind == ev.EMAIL_SENT:
                affected = compose.periods_between(view, day, ended.start)[:1]
                meter = compose.EMAILS_METER
            elif kind == ev.SUPPORT_SESSION_COMPLETED:
                # A late session draws on a bank the later sessions drew on too (R8.2): every
                # billed period of the contract from then on may change.
                affected = compose.periods_between(view, day, ended.start)[-24:]
                meter = compose.SUPPORT_METER
            else:  # access carries over: every billed period from then on may change
                affected = compose.periods_between(view, day, ended.start)[-24:]
                meter = compose.EXTRA_USERS_METER
            for period in affected:
                periods.add(period)
                ids[period][meter].append(event_id)
        billed = await self.store.billed_quantities(
            view.id, [(p.start, p.end) for p in sorted(periods, key=lambda p: p.start)])
        lines: list[Line] = []
        for period in sorted(periods, key=lambda p: p.start):
            start, end = period.start_instant(zone), period.end_instant(zone)
            since = compose.billing_instant(view, compose.support_since(view, period))
            usage = compose.PeriodUsage(
                emails=(await self.store.emails([view.id], start, end)).get(view.id, 0),
                access=(await self.store.access([view.id], end)).get(view.id, []),
                support=(await self.store.support_sessions(
                    [view.id], min(since, start), end)).get(view.id, []))
            recomputed = compose.arrears_quantities(view, self.catalog, period, usage)
            before = {(m, mod): q for (a, b, m, mod), q in billed.items()
                      if (a, b) == (period.start, period.end)}
            # Meters carry the rate after '@' (support): the late event names the meter.
            touched = set(ids[period])
            recomputed = {k: q for k, q in recomputed.items()
                          if k[0].partition("@")[0] in touched}
            before = {k: q for k, q in before.items() if k[0].partition("@")[0] in touched}
            lines.extend(compose.adjustment_lines(view, self.catalog, period, recomputed,
                                                  before, ids[period]))
        return lines

    # --- immediate invoices (R9.2) --------------------------------------------------------------

    async def on_subscription_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        tenant = event.get("subject")
        if not isinstance(tenant, str):
            return
        if kind in ("tenant.created", "subscription.started"):
            # R9.1: the first period is invoiced when it starts.
            views = await self.views([tenant])
            if views:
                await self.bill([tenant], await self.clock.now())
            return
        if kind != "purchase.confirmed":
            return
        views = await self.views([tenant])
        view = views.get(tenant)
        data = event.get("data") or {}
        charges = data.get("charges") or []
        if view is None or not charges:
            return
        lines = []
        for charge in charges:
            lines.append(self._charge_line(view, event, data, charge))
        draft = Draft(tenant=tenant, kind="immediate", currency=data.get("currency")
                      or view.currency, vat_rate=view.vat_rate, period=None, lines=lines,
                      key=str(event.get("id")), extra={"event": event.get("id")})
        issued_at = _event_time(event.get("time")) or await self.clock.now()
        await self.recover()
        await self._issue([draft], issued_at)

    def _charge_line(self, view: TenantState, event: dict[str, Any], data: dict[str, Any],
                     charge: dict[str, Any]) -> Line:
        item = str(charge.get("item") or data.get("item") or "")
        module = None
        try:
            found = self.catalog.item(item)
            module = getattr(found, "module", None) if data.get("kind") != "plan" else None
        except UnknownCatalogItem:
            pass
        period = None
        if isinstance(charge.get("period"), dict):
            period = Period(date.fromisoformat(charge["period"]["from"]),
                            date.fromisoformat(charge["period"]["to"]))
        charged = charge.get("kind")
        kind: LineKind = "proration"
        if charged == "one_time" or charged == "support_contract" \
                or charged == "support_renewal":  # R4.6, R8.4
            kind = charged
        return Line(
            module=module, kind=kind, description=str(charge.get("description", "")),
            quantity=Decimal(str(charge.get("quantity", 1))),
            unit_price=Decimal(str(charge.get("unit_price", charge.get("amount", "0")))),
            amount=parse_money(str(charge["amount"])), period=period,
            source={"meter": None, "module": module, "period": period_json(period),
                    "event_ids": [event.get("id")], "event_type": "purchase.confirmed",
                    "item": item, "lot": data.get("lot")})


    # --- reads ------------------------------------------------------------------------------------

    async def invoice(self, number: str, tenant_scope: str | None) -> dict[str, Any]:
        doc = await self.store.invoice(number)
        if doc is None:
            raw = await self.state.pending_doc(number)
            if raw is not None:
                await self.recover()
                doc = await self.store.invoice(number)
        if doc is None or (tenant_scope is not None and doc["tenant"] != tenant_scope):
            raise NotFound(f"invoice '{number}' not found", field="number")
        return (await self._decorate([doc]))[0]

    async def _decorate(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        notes = await self.store.credit_notes([d["number"] for d in docs])
        for doc in docs:
            doc.pop("usage_cutoff", None)
            mine = notes.get(doc["number"], [])
            doc["credit_notes"] = [{"number": n["number"], "amount": n["amount"],
                                    "issued_at": n["issued_at"], "reason": n.get("reason", "")}
                                   for n in mine]
            credited = sum((Decimal(n["amount"]) for n in mine), Decimal(0))
            total = Decimal(doc["total"])
            doc["status"] = ("issued" if credited == 0 else
                             "credited" if credited >= total else "partially_credited")
        return docs

    async def list_invoices(self, month: str | None, tenant: str | None, status: str | None,
                            cursor: str | None) -> dict[str, Any]:
        window = utc_month(month, "month") if month is not None else None
        if status is not None and status not in STATUSES:
            raise ValidationFailed(f"status: one of {', '.join(STATUSES)}", field="status")
        position = None
        if cursor is not None:
            try:
                position = decode_cursor(cursor)
            except (ValueError, OverflowError):
                raise ValidationFailed("cursor: not a cursor this API gave", field="cursor"
                                       ) from None
        docs = await self.store.list_invoices(window, tenant, status, position, PAGE_SIZE + 1)
        page = await self._decorate(docs[:PAGE_SIZE])
        next_cursor = None
        if len(docs) > PAGE_SIZE:
            last = page[-1]
            next_cursor = encode_cursor(last["issued_at"], last["number"])
        return {"data": page, "next_cursor": next_cursor}

    async def export(self, month: str, tenant_scope: str | None) -> str:
        start, end = utc_month(month, "month")
        docs = await self.store.month_lines(start, end)
        if tenant_scope is not None:
            docs = [d for d in docs if d["tenant"] == tenant_scope]
        return to_csv(docs)

    async def upcoming(self, tenant: str) -> dict[str, Any]:
        views = await self.views([tenant])
        view = views.get(tenant)
        if view is None:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        (last, cutoff), = await self.state.billed_state([tenant])
        nd = compose.next_billing_date(view, last)
        if nd is None:
            return {"tenant": tenant, "billing_date": None, "kind": None, "period": None,
                    "currency": view.currency, "lines": [], "subtotal": "0.00",
                    "tax": "0.00", "total": "0.00", "as_of": utc_text(await self.clock.now())}
        draft, = await self.compose([(view, nd, cutoff, last)])
        doc = render(draft, await self.clock.now(), "")
        doc.pop("usage_cutoff", None)
        doc["number"] = None
        doc["as_of"] = doc.pop("issued_at")
        doc["issued_at"] = None
        for line in doc["lines"]:
            line.pop("_meter", None)
        return doc

    # --- credit notes (R9.3) ----------------------------------------------------------

    async def credit_note(self, number: str, amount_text: str | None, reason: str,
                          tenant_scope: str | None, idempotency_key: str | None = None
                          ) -> dict[str, Any]:
        """R9.3. With an Idempotency-Key, a request sent again answers the note the first one
        issued (409 if the body differs), even once nothing is left to credit."""
        await self.invoice(number, tenant_scope)  # another tenant's invoice does not exist
        request = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 255:
                raise ValidationFailed("Idempotency-Key: 1 to 255 characters",
                                       field="Idempotency-Key")
            fingerprint = hashlib.sha256(
                orjson.dumps([number, amount_text, reason])).hexdigest()
            request = CreditRequest(idempotency_key, fingerprint,
                                    self.settings.invoicing_idempotency_ttl_s)
            earlier = await self.state.credit_replay(number, idempotency_key)
            if earlier is not None:
                return await self._replayed_note(earlier, fingerprint)
        try:
            return await self._issue_credit_note(number, amount_text, reason, request)
        except ValidationFailed as refused:
            if request is None or refused.error_code != "credit_exceeds_invoice":
                raise
            # A twin request (same key, sent at the same time) may have taken what was left.
            earlier = await self.state.credit_replay(number, request.key)
            if earlier is None:
                raise
            return await self._replayed_note(earlier, request.fingerprint)

    async def _issue_credit_note(self, number: str, amount_text: str | None, reason: str,
                                 request: CreditRequest | None) -> dict[str, Any]:
        invoice = await self.invoice(number, None)
        currency = invoice["currency"]
        digits = minor_unit(currency)
        total_minor = int(Decimal(invoice["total"]).scaleb(digits))
        credited = await self.state.credited_minor(number)
        left = total_minor - credited
        if amount_text is None:
            amount_minor = left
        else:
            try:
                amount = parse_money(amount_text)
            except ValueError:
                raise ValidationFailed(f"amount: '{amount_text}' is not a decimal string",
                                       field="amount") from None
            scaled = amount.scaleb(digits)
            if scaled != scaled.to_integral_value():
                raise ValidationFailed(f"amount: at most {digits} decimals in {currency}",
                                       field="amount")
            amount_minor = int(scaled)
            if amount_minor <= 0:
                raise ValidationFailed("amount: must be positive", field="amount")
        if amount_minor <= 0 or amount_minor > left:
            raise ValidationFailed(
                f"amount: only {_minor_text(left, digits)} {currency} is left to credit on "
                f"{number}", field="amount", code="credit_exceeds_invoice")
        now = await self.clock.now()
        gross = Decimal(amount_minor).scaleb(-digits)
        vat = Decimal(invoice.get("vat_rate", "0"))
        tax = compose_tax(gross, vat, currency)
        doc = {"number": NUMBER_PLACEHOLDER, "kind": "credit_note", "invoice": number,
               "tenant": invoice["tenant"], "issued_at": utc_text(now), "currency": currency,
               "amount": format_money(gross, currency),
               "subtotal": format_money(gross - tax, currency),
               "tax": format_money(tax, currency), "total": format_money(gross, currency),
               "reason": reason}
        result = await self.state.credit(number, total_minor, amount_minor,
                                         now.astimezone(UTC).year, orjson.dumps(doc), request)
        if result.outcome == "refused":
            raise ValidationFailed(
                f"amount: only {_minor_text(result.left_minor, digits)} {currency} is left to "
                f"credit on {number}", field="amount", code="credit_exceeds_invoice")
        if result.outcome == "replayed":  # the same request, at the same time
            return await self._replayed_note(result, request.fingerprint if request else "")
        doc["number"] = result.number
        await self.store.insert_documents([doc])
        await self.state.clear_pending([result.number])
        return doc

    async def _replayed_note(self, earlier: CreditResult, fingerprint: str) -> dict[str, Any]:
        if earlier.fingerprint != fingerprint:
            raise Conflict("this Idempotency-Key was used for a different request",
                           field="Idempotency-Key", code="idempotency_key_reused")
        doc = await self.store.credit_note(earlier.number)
        if doc is None:
            # Numbered, not yet in ClickHouse (the first request is writing it, or died
            # before): its pending copy is the document.
            raw = await self.state.pending_doc(earlier.number)
            doc = orjson.loads(raw) if raw is not None else await self.store.credit_note(
                earlier.number)  # written and cleared in between
        if doc is None:
            raise NotFound(f"credit note '{earlier.number}' not found", field="number")
        result: dict[str, Any] = doc
        return result


def compose_tax(gross: Decimal, vat: Decimal, currency: str) -> Decimal:
    """The tax inside a gross credit: gross × vat / (1 + vat), rounded once (R3.2)."""
    return round_fraction(Fraction(gross) * Fraction(vat) / (1 + Fraction(vat)), currency)


def _minor_text(minor: int, digits: int) -> str:
    return format(Decimal(minor).scaleb(-digits), "f")


def _event_time(value: Any) -> datetime | None:
    """An event's `time`, or None when it has none an invoice can be dated by."""
    try:
        return parse_instant(value, "time")
    except ValidationFailed:
        return None


def _email_query(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"sql": "SELECT sum(toInt128(JSONExtractUInt(data, 'count'))) FROM (SELECT data FROM "
                   "usage_events WHERE tenant = {tenant} AND type = 'email.sent' AND time >= "
                   "{from} AND time < {to} LIMIT 1 BY source, id)",
            "params": {"tenant": tenant, "from": utc_text(start), "to": utc_text(end)}}


def _support_query(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"sql": "SELECT id, time, JSONExtractInt(data, 'minutes'), JSONExtractInt(data, "
                   "'level') FROM usage_events WHERE tenant = {tenant} AND type = "
                   "'support.session.completed' AND time >= {from} AND time < {to} "
                   "LIMIT 1 BY source, id",
            "params": {"tenant": tenant, "from": utc_text(start), "to": utc_text(end)},
            "rule": "R8.1-R8.3: each session rounded up to 15 min, taken from the day's "
                    "allowance (levels 1-2), then the banks, the rest billed per hour"}


def _access_query(tenant: str, end: datetime) -> dict[str, Any]:
    return {"sql": "SELECT module, user_id, time, type FROM usage_events WHERE tenant = "
                   "{tenant} AND type IN ('user.access.granted', 'user.access.revoked') AND "
                   "time < {to} LIMIT 1 BY source, id",
            "params": {"tenant": tenant, "to": utc_text(end)},
            "rule": "R6.4: distinct users with access at any moment of the period, "
                    "administrator excluded, minus seat capacity on the last day"}


def to_csv(docs: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for doc in docs:
        for i, line in enumerate(doc.get("lines", []), start=1):
            period = line.get("period") or {}
            writer.writerow([
                doc["number"], doc["kind"], doc["tenant"], doc["issued_at"], doc["currency"],
                i, line.get("module") or "", line["kind"], line["description"],
                line["quantity"], line["unit_price"], line["amount"], period.get("from", ""),
                period.get("to", ""), doc["subtotal"], doc["tax"], doc["total"],
                orjson.dumps(line.get("source")).decode()])
    return out.getvalue()
