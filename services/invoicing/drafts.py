"""Drafts of period invoices: the usage of each ended period read from ClickHouse, then
priced by the pure rules of compose.py (R9.1, R6.4, R7.2, R8.1–R8.3) and usage_charges.py
(R10.1–R10.3), with the late usage of
periods already billed corrected by adjustment lines (R9.4).

Tenants billed for the same period window share one query per kind of usage, so a billing
run costs a few queries per window, not per tenant. Each line keeps the query that measured
it (provenance, R9.6).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from services.invoicing import compose, schedule
from services.invoicing.late import LateUsage, LateWork
from services.invoicing.models import Draft
from services.invoicing.store import InvoiceStore
from services.invoicing.usage_charges import UsageCharges, usage_lines
from shared.billing.periods import Cycle, Period, period_containing
from shared.billing.seats import access_intervals
from shared.catalog import Catalog
from shared.catalog_versions import CatalogVersions
from shared.meters import MeterRegistry
from shared.subscription import TenantState
from shared.times import utc_text


class Drafts:
    def __init__(self, store: InvoiceStore, catalogs: CatalogVersions, meters: MeterRegistry
                 ) -> None:
        self.store = store
        # R10.5: each period is priced by the tenant's catalog version in force at its start.
        self.catalogs = catalogs
        self.usage = UsageCharges(store, catalogs, meters)
        self.late = LateUsage(store, catalogs, meters)

    async def compose(self, todo: Sequence[tuple[TenantState, date, int | None, date | None]]
                      ) -> list[Draft]:
        """Drafts for (tenant, billing date), usage read in one query per period window."""
        cutoff = await self.store.now()  # R9.4: rows stored after this are "late" next time
        drafts: list[Draft] = []
        groups: dict[tuple[datetime, datetime], list[tuple[TenantState, date, Period]]] = \
            defaultdict(list)
        for view, day, _, _ in todo:
            ended = schedule.ended_period(view, day)
            if ended is None:  # R9.1: the first period, in advance, when it starts
                period = period_containing(view.anchor, Cycle(view.cycle), day)
                drafts.append(Draft(
                    tenant=view.id, kind="immediate", currency=view.currency,
                    vat_rate=view.vat_rate, period=period,
                    lines=compose.advance_lines(view, self._catalog(view, period), period),
                    billing_date=day,
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
            # R6.4: each tenant's spans of access, for its arrears and its late usage alike
            spans = {tenant: access_intervals(rows) for tenant, rows in access.items()}
            since = min(schedule.billing_instant(v, compose.support_since(v, e))
                        for v, _, e in members)  # R8.2: banks are used from their start
            support = await self.store.support_sessions(names, min(since, start), end)
            metered = await self.usage.read([view for view, _, _ in members], start, end)
            late = await self.late.adjustments([
                LateWork(view, ended.start, seen) for view, _, ended in members
                if (seen := cutoffs.get(view.id)) is not None], spans)
            for view, day, ended in members:
                usage = compose.PeriodUsage(
                    emails=emails.get(view.id, 0), access=access.get(view.id, []),
                    email_query=email_query(view.id, start, end),
                    access_query=access_query(view.id, end),
                    support=support.get(view.id, []),
                    support_query=support_query(view.id, min(since, start), end),
                    intervals=spans.get(view.id, {}))
                catalog = self._catalog(view, ended)
                lines = compose.arrears_lines(view, catalog, ended, usage)
                lines.extend(usage_lines(view, catalog, ended, metered, usage.spans(),
                                         usage.access_query))  # R10.1-R10.3
                adjusted = late.get(view.id)
                if adjusted is not None:  # R9.4
                    lines.extend(adjusted.lines)
                renews = schedule.renews_at(view, day)
                period = ended
                if renews:
                    period = period_containing(view.anchor, Cycle(view.cycle), day)
                    # R4.12: packs priced per licence count them from the access read above
                    lines.extend(compose.advance_lines(view, self._catalog(view, period),
                                                       period, usage.spans()))
                drafts.append(Draft(
                    tenant=view.id, kind="period", currency=view.currency,
                    vat_rate=view.vat_rate, period=period, lines=lines, billing_date=day,
                    usage_cutoff=cutoff, key=day.isoformat(), advances_cutoff=True,
                    runs=[] if adjusted is None else adjusted.runs))
        return drafts

    def _catalog(self, view: TenantState, period: Period) -> Catalog:
        return self.catalogs.of(view, period.start_instant(view.zone))


def email_query(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"sql": "SELECT sum(toInt128(JSONExtractUInt(data, 'count'))) FROM (SELECT data FROM "
                   "usage_events WHERE tenant = {tenant} AND type = 'email.sent' AND time >= "
                   "{from} AND time < {to} LIMIT 1 BY source, id)",
            "params": {"tenant": tenant, "from": utc_text(start), "to": utc_text(end)}}


def support_query(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"sql": "SELECT id, time, JSONExtractInt(data, 'minutes'), JSONExtractInt(data, "
                   "'level') FROM usage_events WHERE tenant = {tenant} AND type = "
                   "'support.session.completed' AND time >= {from} AND time < {to} "
                   "LIMIT 1 BY source, id",
            "params": {"tenant": tenant, "from": utc_text(start), "to": utc_text(end)},
            "rule": "R8.1-R8.3: each session rounded up to 15 min, taken from the day's "
                    "allowance (levels 1-2), then the banks, the rest billed per hour"}


def access_query(tenant: str, end: datetime) -> dict[str, Any]:
    return {"sql": "SELECT module, user_id, time, type FROM usage_events WHERE tenant = "
                   "{tenant} AND type IN ('user.access.granted', 'user.access.revoked') AND "
                   "time < {to} LIMIT 1 BY source, id",
            "params": {"tenant": tenant, "to": utc_text(end)},
            "rule": "R6.4: distinct users with access at any moment of the period, "
                    "administrator excluded, minus seat capacity on the last day"}
