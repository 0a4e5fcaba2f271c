"""Support renewals announced by the vendor or declined by the tenant (R8.6): pure functions
of the tenant document, wired in by support.py (`due_instants`, `advance_support`) and by the
service's lot cancellation.

- Notices: an active bank contract announces `support.renewal_due` at local midnight 30 days
  and 7 days before it ends, once each. The days already announced are kept on the lot
  (`renewal_notices`), committed in the same call as the event, so a replay, a restart or a
  clock moved past both in one step never announces one twice. A contract already renewed
  or cancelled is not announced (nothing to offer).
- Declining: a daily plan cancelled after its renewal was invoiced still ends at its contract
  end (no roll-over) and records `support.renewal_declined`, naming the `purchase.confirmed`
  event of that invoice, which invoicing then credits in full (R9.7).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from shared.billing import support as sb
from shared.billing.money import format_money
from shared.billing.periods import add_years, local_midnight
from shared.errors import Conflict
from shared.subscription import Lot, TenantState
from shared.times import utc_text

# As in support.py (which imports this module): records one event, answers its id.
Record = Callable[[str, datetime, dict[str, Any]], str]

# Days before a bank contract's end at which its renewal is announced, earliest first.
NOTICE_DAYS: Final = (30, 7)
DEFAULT_DISCOUNT: Final = Decimal("0.10")


def _announced(state: TenantState, lot: Lot) -> bool:
    """A bank contract still worth announcing: active (not cancelled, not ended) and not
    renewed yet (a renewal is a new lot naming this one in `renews`)."""
    if lot.kind != "support" or lot.state != "active" or lot.auto_renew \
            or lot.ends_at is None or lot.contract_end is None:
        return False
    return not any(other.renews == lot.id for other in state.lots)


def _notices_left(state: TenantState, lot: Lot, zone: ZoneInfo) -> list[tuple[int, datetime]]:
    if not _announced(state, lot):
        return []
    assert lot.contract_end is not None
    return [(days, local_midnight(lot.contract_end - timedelta(days=days), zone))
            for days in NOTICE_DAYS if days not in lot.renewal_notices]


def notice_instants(state: TenantState, zone: ZoneInfo) -> list[datetime]:
    """When the notices not sent yet fall due; each is cleared by `send_notices`."""
    return [at for lot in state.lots for _, at in _notices_left(state, lot, zone)]


def send_notices(state: TenantState, zone: ZoneInfo, due: datetime, record: Record) -> None:
    """Announce every notice due at `due`, dated at its own instant, and mark it sent."""
    for lot in state.lots:
        for days, at in _notices_left(state, lot, zone):
            if at <= due:
                lot.renewal_notices.append(days)
                record("support.renewal_due", at, notice_data(state, lot, days, zone))


def notice_data(state: TenantState, lot: Lot, days: int, zone: ZoneInfo) -> dict[str, Any]:
    """What the vendor needs to offer the on-time renewal (R8.4: 10 % off, unused time
    carried over), priced as a renewal made on the notice's day would be."""
    assert lot.contract_end is not None
    end = lot.contract_end
    discount = lot.renewal_discount if lot.renewal_discount is not None else DEFAULT_DISCOUNT
    full = renewal = None
    if lot.unit_price is not None:
        full = lot.unit_price * lot.quantity
        renewal = sb.renewal_terms(full, end, end - timedelta(days=days), state.currency,
                                   discount).amount
    return {
        "lot": lot.id, "item": lot.item, "quantity": lot.quantity,
        "contract": {"from": None if lot.contract_start is None
                     else lot.contract_start.isoformat(), "to": end.isoformat()},
        "expires_at": utc_text(local_midnight(end, zone)), "days_left": days,
        "currency": state.currency,
        "full_price": None if full is None else format_money(full, state.currency),
        "renewal_price": None if renewal is None else format_money(renewal, state.currency),
        "discount": format(discount, "f"),
        "renewal": {"from": end.isoformat(), "to": add_years(end).isoformat()},
    }


def declined_renewal(lot: Lot, zone: ZoneInfo) -> dict[str, Any] | None:
    """The data of `support.renewal_declined` when cancelling `lot` (not yet marked
    cancelled) declines a renewal already invoiced; None when no renewal is invoiced yet."""
    end = lot.contract_end
    if end is None or lot.renewal_invoiced != end:
        return None
    if lot.renewal_event is None:
        # Invoiced before the event id was kept on the lot: the invoice cannot be named, so
        # it could not be credited; refuse rather than decline without a credit.
        raise Conflict(f"the renewal of lot {lot.id} from {end} was invoiced without a "
                       "reference to its invoice; ask for a credit note (R8.6, R9.7)",
                       field="lot", code="renewal_already_invoiced")
    return {"lot": lot.id, "item": lot.item, "quantity": lot.quantity,
            "ends_at": utc_text(local_midnight(end, zone)),
            "declined": {"from": end.isoformat(), "to": add_years(end).isoformat()},
            "renewal_event": lot.renewal_event}


def refuse_uncancel(lot: Lot) -> None:
    """A declined renewal was credited (R8.6): undoing the cancellation would roll the lot
    over unpaid, so the tenant renews it by hand instead (R8.4, on time: 10 % off)."""
    if lot.contract_end is not None and lot.renewal_invoiced == lot.contract_end:
        raise Conflict(f"the renewal of lot {lot.id} from {lot.contract_end} was declined "
                       "and its invoice credited; renew the plan instead (R8.4, R8.6)",
                       field="lot", code="renewal_declined")
