"""A migration's preview (R10.5): what a tenant would pay under another catalog version.

Two figures, both computed by the billing run's own code, so that the preview is what a run
would issue and not a second rule of pricing:
- the next period's recurring fees (plan and packs, billed in advance) under the tenant's
  version and under the new one;
- the last closed period re-priced under the new version: the drafts a billing run composes
  for that period's two billing dates (its start: fees in advance; its end: usage in
  arrears), for the tenant pinned to the new version, keeping the lines of that period; set
  line by line beside the lines issued for it.

Entitlements answers the migration route and runs this against invoicing's stores, which it
only reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from services.invoicing import compose
from services.invoicing.drafts import Drafts
from services.invoicing.models import Line
from shared.billing.money import format_money, parse_money
from shared.billing.periods import Cycle, Period, local_date, period_containing
from shared.subscription import TenantState
from shared.times import utc_text


def pinned_to(view: TenantState, version: str) -> TenantState:
    """The document as if the tenant had always been billed by `version`."""
    return view.model_copy(update={"catalog_version": version, "catalog_changes": [],
                                   "pending_catalog": None, "pending_catalog_at": None})


class Repricing:
    """Migration previews (R10.5), drafted by the billing code on invoicing's stores."""

    def __init__(self, drafts: Drafts) -> None:
        self.drafts = drafts
        self.store, self.catalogs = drafts.store, drafts.catalogs

    async def preview(self, view: TenantState, version: str, now: datetime
                      ) -> dict[str, Any]:
        """The preview of moving `view` to `version` at its next period start."""
        zone, cycle = view.zone, Cycle(view.cycle)
        current = period_containing(view.anchor, cycle, max(local_date(now, zone), view.anchor))
        upcoming = period_containing(view.anchor, cycle, current.end)
        moved = pinned_to(view, version)
        start = upcoming.start_instant(zone)
        answer: dict[str, Any] = {
            "takes_effect": utc_text(start),
            "next_period": {
                "period": upcoming.public(),
                "current": _fees(compose.advance_lines(
                    view, self.catalogs.of(view, start), upcoming), view.currency),
                "new": _fees(compose.advance_lines(
                    moved, self.catalogs.get(version), upcoming), view.currency)},
            "last_closed_period": None}
        if current.start > view.anchor and local_date(now, zone) >= view.anchor:
            closed = period_containing(view.anchor, cycle, current.start - timedelta(days=1))
            repriced = await self.repriced(moved, closed)
            invoiced = await self._invoiced(view, closed, now)
            answer["last_closed_period"] = _side_by_side(
                closed, invoiced, [line.public(view.currency) for line in repriced],
                view.currency)
        return answer

    async def repriced(self, moved: TenantState, closed: Period) -> list[Line]:
        """The lines of `closed` a billing run issues for `moved` (no late usage: every
        event stored so far is read as if on time)."""
        drafts = await self.drafts.compose([(moved, closed.start, None, None),
                                            (moved, closed.end, None, None)])
        return [line for draft in drafts for line in draft.lines if line.period == closed]

    async def _invoiced(self, view: TenantState, closed: Period, now: datetime
                        ) -> list[dict[str, Any]]:
        """The issued lines of `closed`: its fees, its usage, purchases made within it and
        corrections of it; credit notes are left out (they credit, not price)."""
        since = closed.start_instant(view.zone) - timedelta(days=1)  # a creation's invoice
        docs = await self.store.month_documents(since, now + timedelta(seconds=1), view.id)
        start, end = closed.start.isoformat(), closed.end.isoformat()
        return [line for doc in docs if doc.get("kind") != "credit_note"
                for line in doc.get("lines", [])
                if isinstance(line.get("period"), dict)
                and start <= line["period"]["from"] and line["period"]["to"] <= end]


def _fees(lines: Sequence[Line], currency: str) -> dict[str, Any]:
    return {"lines": [line.public(currency) for line in lines],
            "subtotal": format_money(sum((line.amount for line in lines), Decimal(0)),
                                     currency)}


def _key(line: dict[str, Any]) -> tuple[str, str, str]:
    """What pairs an issued line with its re-priced one: kind, module and what it prices
    (pack lot, plan, meter), or the description when it names none."""
    source = line.get("source") or {}
    what = source.get("lot") or source.get("item") or source.get("meter") \
        or source.get("plan") or line.get("description", "")
    return (str(line.get("kind")), str(line.get("module") or ""), str(what))


def _side_by_side(closed: Period, invoiced: list[dict[str, Any]],
                  repriced: list[dict[str, Any]], currency: str) -> dict[str, Any]:
    new = {_key(line): line for line in repriced}
    rows = [_row(line, line, new.pop(_key(line), None)) for line in invoiced]
    rows.extend(_row(line, None, line) for line in new.values())
    return {"period": closed.public(), "lines": rows,
            "invoiced": format_money(_total(invoiced), currency),
            "repriced": format_money(_total(repriced), currency)}


def _row(line: dict[str, Any], invoiced: dict[str, Any] | None,
         repriced: dict[str, Any] | None) -> dict[str, Any]:
    return {"kind": line["kind"], "module": line["module"], "description": line["description"],
            "invoiced": _amounts(invoiced), "repriced": _amounts(repriced)}


def _amounts(line: dict[str, Any] | None) -> dict[str, str] | None:
    return None if line is None else {"quantity": line["quantity"],
                                      "unit_price": line["unit_price"],
                                      "amount": line["amount"]}


def _total(lines: Iterable[dict[str, Any]]) -> Decimal:
    return sum((parse_money(line["amount"]) for line in lines), Decimal(0))
