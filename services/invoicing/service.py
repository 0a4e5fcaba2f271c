"""Billing runs and immediate invoices: what falls due is composed (drafts.py), numbered and
written, once (R9.1, R9.2, R9.5). Reads and credit notes are `reads` and `credits`.

Issue path of every document (docs/invoicing.md, "Numbers and crashes"):
1. compose a draft from the tenant document and the usage (drafts.py, pure rules in
   compose.py);
2. one Lua call per document: refuse an already billed key (R9.5), take the year's next
   number (R9.3), keep the full document as pending, mark the key billed;
3. insert the documents into ClickHouse (deduplicated on read by number);
4. drop them from pending.
`recover()` (at start and before every run) re-does 3-4 for anything left pending, so a
crash anywhere leaves either nothing or a numbered document that will be written, once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from services.invoicing import legal, schedule
from services.invoicing.announce import announcement
from services.invoicing.credits import CreditNotes
from services.invoicing.declines import DECLINED, RenewalDeclines
from services.invoicing.documents import render, served
from services.invoicing.drafts import Drafts
from services.invoicing.late import LateWork
from services.invoicing.models import Draft, Line, LineKind, period_json
from services.invoicing.pdf import DocumentRenderer
from services.invoicing.reads import InvoiceReads
from services.invoicing.state import (
    ISSUED_AT_PLACEHOLDER,
    NUMBER_PLACEHOLDER,
    InvoiceState,
    IssueRequest,
    IssueResult,
)
from services.invoicing.store import InvoiceStore
from shared.billing.money import parse_money
from shared.billing.periods import Period
from shared.catalog import UnknownCatalogItem
from shared.catalog_versions import CatalogVersions
from shared.clock import Clock
from shared.errors import NotFound, ValidationFailed
from shared.meters import MeterRegistry
from shared.observability import INVOICES_ISSUED
from shared.settings import InvoicingSettings
from shared.subscription import TenantState
from shared.times import from_micros, micros, parse_instant, utc_text

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Work:
    view: TenantState
    last: date | None
    cutoff_us: int | None


@dataclass(frozen=True, slots=True)
class RunResult:
    issued: list[str]
    skipped: list[str]


class InvoicingService:
    def __init__(self, state: InvoiceState, store: InvoiceStore, catalogs: CatalogVersions,
                 clock: Clock, settings: InvoicingSettings,
                 meters: MeterRegistry | None = None) -> None:
        self.state = state
        self.store = store
        self.catalogs = catalogs
        self.clock = clock
        self.settings = settings
        # The meters usage charges price (R10.1): built-in ones unless declared ones are given.
        self.drafts = Drafts(store, catalogs, meters or MeterRegistry.load(None))
        self.reads = InvoiceReads(state, store, self.recover, settings.accounting_zone)
        self.credits = CreditNotes(state, store, self.reads, clock, settings)
        self.declines = RenewalDeclines(state, self.credits)
        self.documents = DocumentRenderer(settings.invoicing_document_template,
                                          settings.accounting_zone)

    async def pdf(self, number: str, tenant_scope: str | None = None) -> bytes:
        """The PDF of an invoice or a credit note (R9.8), as `GET /v1/invoices/{number}`
        reads it: a key limited to another tenant gets NotFound."""
        return await self.documents.pdf(await self.reads.invoice(number, tenant_scope))

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
        return await self.state.tenant_documents(tenants)

    async def sync_index(self, tenants: Sequence[str] | None = None) -> None:
        """Index the next billing instant of tenants not indexed yet (or of `tenants`)."""
        todo = list(tenants) if tenants is not None else await self.state.unindexed()
        for start in range(0, len(todo), 5_000):
            chunk = todo[start:start + 5_000]
            views = await self.views(chunk)
            billed = await self.state.billed_state(chunk)
            items: list[tuple[str, datetime | None]] = []
            ended: list[str] = []
            for tenant, (last, _) in zip(chunk, billed, strict=True):
                view = views.get(tenant)
                nd = None if view is None else schedule.next_billing_date(view, last)
                items.append((tenant, None if nd is None or view is None
                              else schedule.billing_instant(view, nd)))
                if view is not None and nd is None and last is not None:
                    ended.append(tenant)  # no billing date left: late usage is swept
            await self.state.set_next(items)
            await self.state.mark_ended(ended)

    async def next_due(self) -> datetime | None:
        await self.sync_index()
        due = [us for us in (await self.state.next_due_us(), await self.state.sweep_due_us())
               if us is not None]
        return from_micros(min(due)) if due else None

    async def run_due(self, now: datetime) -> RunResult:
        tenants = await self.state.due_tenants(now)
        result = await self.bill(tenants, now)
        sweep = await self.state.sweep_due_us()
        if sweep is not None and from_micros(sweep) <= now:
            result.issued.extend(await self.sweep_ended(now))
        return result

    async def sweep_ended(self, now: datetime) -> list[str]:
        """R9.4: the late usage of subscriptions with no billing date left, each tenant's on
        an invoice of its own (kind `immediate`); looked at once a day of the platform
        clock, so within a day of its arrival."""
        tenants = await self.state.ended_tenants()
        issued: list[str] = []
        batch = self.settings.invoicing_batch_tenants
        for start in range(0, len(tenants), batch):
            chunk = tenants[start:start + batch]
            views = await self.views(chunk)
            work = [LateWork(views[t], end, cutoff) for t, (last, cutoff) in zip(
                chunk, await self.state.billed_state(chunk), strict=True)
                if t in views and cutoff is not None
                and (end := schedule.last_billing_date(views[t])) is not None and last == end]
            cutoff_now = await self.store.now()
            late = await self.drafts.late.adjustments(work)
            drafts = [Draft(tenant=w.view.id, kind="immediate", currency=w.view.currency,
                            vat_rate=w.view.vat_rate, period=None, lines=found.lines,
                            runs=found.runs, usage_cutoff=cutoff_now,
                            key=f"late:{w.cutoff_us}", advances_cutoff=True)
                      for w in work if (found := late.get(w.view.id)) is not None]
            issued.extend((await self._issue(drafts, now, views))[0])
        await self.state.set_sweep(now + timedelta(days=1))
        return issued

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
            due = [name for name, view in views.items() if schedule.is_billing_date(view, day)]
            numbers = await self.state.billed_numbers(due, day)
            skipped.extend(name for name in due if numbers[name] is not None)
            targets = [name for name in due if numbers[name] is None
                       and schedule.billing_instant(views[name], day) <= now]
            if targets:
                result = await self.bill(targets, now, up_to=day)
                issued.extend(result.issued)
                # Billed meanwhile by another path (the first invoice on `tenant.created`,
                # the clock): already billed, so skipped too (R9.5), not left unanswered.
                numbers = await self.state.billed_numbers(targets, day)
                skipped.extend(name for name in targets if numbers[name] is not None
                               and numbers[name] not in result.issued)
        return {"date": day.isoformat(), "issued": issued, "skipped": sorted(set(skipped))}

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
                    nd = schedule.next_billing_date(item.view, item.last)
                    if nd is None or schedule.billing_instant(item.view, nd) > until:
                        continue
                    if up_to is not None and nd > up_to:
                        continue
                    todo.append((name, nd))
                if not todo:
                    break
                drafts = await self.drafts.compose(
                    [(work[n].view, d, work[n].cutoff_us, work[n].last) for n, d in todo])
                numbers, was_billed = await self._issue(drafts, until, views)
                issued.extend(numbers)
                skipped.extend(was_billed)
                for draft in drafts:
                    item = work[draft.tenant]
                    item.last = draft.billing_date
                    if draft.usage_cutoff is not None and draft.advances_cutoff:
                        item.cutoff_us = micros(draft.usage_cutoff)
                if was_billed:  # someone else got there first: re-read their marks
                    fresh = await self.state.billed_state(was_billed)
                    for name, (last, cutoff) in zip(was_billed, fresh, strict=True):
                        work[name].last, work[name].cutoff_us = last, cutoff
            await self.sync_index(chunk)
        return RunResult(issued, skipped)

    async def _issue(self, drafts: Sequence[Draft], issued_at: datetime,
                     views: Mapping[str, TenantState], actor: dict[str, Any] | None = None
                     ) -> tuple[list[str], list[str]]:
        """Number, announce and write `drafts`; `views` (their tenants' documents, as read
        for the drafts) name the buyer (R9.8); `actor` is who caused them (null: the clock)."""
        requests: list[IssueRequest] = []
        templates: list[dict[str, Any]] = []
        terms = self.settings.invoicing_payment_terms_days
        for draft in drafts:
            doc = render(draft, ISSUED_AT_PLACEHOLDER, NUMBER_PLACEHOLDER)
            doc.update(legal.mentions(self.settings, draft.tenant, views.get(draft.tenant),
                                      terms))
            templates.append(doc)
            requests.append(IssueRequest(
                marker_key=self.state.keys.billed(draft.tenant)
                if draft.billing_date or draft.advances_cutoff else self.state.keys.events,
                field=draft.key, kind="INV",
                issued_at=issued_at, template=orjson.dumps(doc),
                announcement=announcement(doc, actor),
                empty=not draft.lines and not draft.runs,
                last="" if draft.billing_date is None else draft.billing_date.isoformat(),
                cutoff_us=micros(draft.usage_cutoff)
                if draft.usage_cutoff is not None and draft.advances_cutoff else None))
        results = await self.state.issue(requests)
        numbers = [r.number for r in results if r.issued]
        INVOICES_ISSUED.inc(len(numbers))
        skipped = [d.tenant for d, r in zip(drafts, results, strict=True)
                   if not r.issued and r.number != "" and d.billing_date is not None]
        if numbers:
            docs = await self._issued_documents(templates, results)
            await self.store.insert_documents(docs)
            await self.state.clear_pending([d["number"] for d in docs])
        return numbers, skipped

    async def _issued_documents(self, templates: Sequence[dict[str, Any]],
                                results: Sequence[IssueResult]) -> list[dict[str, Any]]:
        """The documents issued, as kept pending: each template filled with the number and
        issue instant its numbering call gave it, without reading back and parsing what it
        kept. A call answering as an earlier run of itself did (a resend) gives no instant:
        those documents are read from pending, if still there."""
        docs = [{**doc, "number": r.number, "issued_at": r.issued_at}
                for doc, r in zip(templates, results, strict=True) if r.issued and r.issued_at]
        resent = [r.number for r in results if r.issued and not r.issued_at]
        pending = await self.state.pending_of(resent)
        docs.extend(dict(orjson.loads(pending[n])) for n in resent if n in pending)
        return docs

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
        if kind == DECLINED:  # R8.6: the declined renewal's invoice is credited in full
            await self.declines.on_declined(event)
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
        # The purchase's actor caused this invoice: its announcement names them.
        actor = data.get("actor") if isinstance(data.get("actor"), dict) else None
        await self._issue([draft], issued_at, views, actor)
        await self.declines.settle(draft.key)  # R8.6: a decline read before this invoice

    def _charge_line(self, view: TenantState, event: dict[str, Any], data: dict[str, Any],
                     charge: dict[str, Any]) -> Line:
        item = str(charge.get("item") or data.get("item") or "")
        module = None
        try:
            # The version the purchase was priced by (R10.5): the tenant's at the event.
            found = self.catalogs.of(view, _event_time(event.get("time")) or view.created_at
                                     ).item(item)
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

    async def upcoming(self, tenant: str) -> dict[str, Any]:
        views = await self.views([tenant])
        view = views.get(tenant)
        if view is None:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        (last, cutoff), = await self.state.billed_state([tenant])
        nd = schedule.next_billing_date(view, last)
        if nd is None:
            return {"tenant": tenant, "billing_date": None, "kind": None, "period": None,
                    "currency": view.currency, "lines": [], "subtotal": "0.00",
                    "tax": "0.00", "total": "0.00", "as_of": utc_text(await self.clock.now())}
        draft, = await self.drafts.compose([(view, nd, cutoff, last)])
        doc = served(render(draft, utc_text(await self.clock.now()), ""))
        doc.pop("usage_cutoff", None)
        doc.update(legal.mentions(self.settings, tenant, view,
                                  self.settings.invoicing_payment_terms_days))
        doc["due_date"] = None  # known once issued: the issue date plus the terms
        doc["number"] = None
        doc["as_of"] = doc.pop("issued_at")
        doc["issued_at"] = None
        return doc


def _event_time(value: Any) -> datetime | None:
    """An event's `time`, or None when it has none an invoice can be dated by."""
    try:
        return parse_instant(value, "time")
    except ValidationFailed:
        return None
