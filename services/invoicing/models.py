"""Invoicing models: a read model of the tenant document (owned by entitlements), invoice
lines and documents, request bodies, and the CSV column order.

Money is `Decimal` in memory and a decimal string in JSON (R3.1); an issued invoice is an
immutable JSON document (R9.3), rendered once at issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.billing.money import format_money, line_amount
from shared.billing.periods import Cycle, Period

# --- read model of entitlements' tenant document (`ent:tenant:{t}` field `doc`) ------------


class LotView(BaseModel):
    """A lot as invoicing needs it (R4.4): what, how many, and when it granted."""

    model_config = ConfigDict(extra="ignore")
    id: str
    item: str
    kind: str
    quantity: int
    units: int = 1
    state: str
    bought_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    trial: bool = False
    unit_price: Decimal | None = None
    # Support contracts (R8): local days [contract_start, contract_end).
    contract_start: date | None = None
    contract_end: date | None = None
    renews: str | None = None
    carry_over: bool = False
    since: date | None = None  # a daily plan's first contract start (it rolls over in place)

    def active_at(self, instant: datetime) -> bool:
        """Granting at `instant` (expired lots keep their `ends_at`)."""
        if self.bought_at > instant:
            return False
        return self.ends_at is None or self.ends_at > instant

    def active_during(self, start: datetime, end: datetime) -> bool:
        """Granting at some moment of `[start, end)`."""
        return self.bought_at < end and (self.ends_at is None or self.ends_at > start)


class PlanChangeView(BaseModel):
    """The plan was `previous` until `at`."""

    model_config = ConfigDict(extra="ignore")
    at: AwareDatetime
    previous: str


class TenantView(BaseModel):
    """The fields of entitlements' TenantState that billing reads (extra fields ignored)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    plan: str
    cycle: Cycle
    anchor: date
    time_zone: str
    currency: str
    vat_rate: Decimal
    admin_user: str
    renewal: bool = True
    status: str = "active"
    pending_plan: str | None = None
    pending_plan_at: AwareDatetime | None = None
    plan_changes: list[PlanChangeView] = Field(default_factory=list)  # oldest first
    ends_at: AwareDatetime | None = None
    created_at: AwareDatetime | None = None
    lots: list[LotView] = Field(default_factory=list)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def plan_at(self, instant: datetime) -> str:
        """The plan in force at `instant`: a scheduled downgrade applies at its instant (R4.5),
        and before a recorded change the plan it left was."""
        if self.pending_plan is not None and self.pending_plan_at is not None \
                and self.pending_plan_at <= instant:
            return self.pending_plan
        plan = self.plan
        for change in reversed(self.plan_changes):
            if instant >= change.at:
                break
            plan = change.previous
        return plan

    def plan_changes_within(self, start: datetime, end: datetime) -> list[datetime]:
        """The instants in (start, end) at which the plan changed, in order."""
        return [c.at for c in self.plan_changes if start < c.at < end]

    def end_instant(self) -> datetime | None:
        """When the subscription ends (renewal off, R4.1), or None while it renews."""
        if self.renewal and self.status != "ended":
            return None
        return self.ends_at


# --- invoice lines and documents -----------------------------------------------------------

LineKind = Literal["plan", "pack", "proration", "one_time", "support_contract",
                   "support_renewal", "extra_users", "email_overage", "support_overage",
                   "adjustment"]
InvoiceKind = Literal["period", "immediate"]
_KIND_ORDER: Final = {"plan": 0, "pack": 1, "proration": 2, "one_time": 3,
                      "support_contract": 3, "support_renewal": 3, "extra_users": 4,
                      "email_overage": 5, "support_overage": 6, "adjustment": 7}


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def period_json(period: Period | None) -> dict[str, str] | None:
    if period is None:
        return None
    return {"from": period.start.isoformat(), "to": period.end.isoformat()}


def number_text(value: Decimal) -> str:
    """A quantity or unit price as a plain decimal string, without exponent."""
    text = format(value, "f")
    return text


@dataclass(frozen=True, slots=True)
class Line:
    """One invoice line (R9.1): amount already rounded once (R3.2), provenance (R9.6)."""

    module: str | None
    kind: LineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    period: Period | None
    source: dict[str, Any]
    meter: str = ""

    @classmethod
    def priced(cls, *, module: str | None, kind: LineKind, description: str,
               quantity: Decimal, unit_price: Decimal, currency: str, period: Period | None,
               source: dict[str, Any], meter: str = "") -> Line:
        """A line whose amount is quantity × unit price, rounded once (R3.2): the one place
        composition rounds."""
        return cls(module=module, kind=kind, description=description, quantity=quantity,
                   unit_price=unit_price, amount=line_amount(quantity, unit_price, currency),
                   period=period, source=source, meter=meter)

    def sort_key(self) -> tuple[int, str, int, str]:
        # Grouped by module (R9.1): module-less lines (plan, packs tied to no module) first.
        return (0 if self.module is None else 1, self.module or "",
                _KIND_ORDER.get(self.kind, 9), self.description)

    def public(self, currency: str) -> dict[str, Any]:
        return {"module": self.module, "kind": self.kind, "description": self.description,
                "quantity": number_text(self.quantity),
                "unit_price": number_text(self.unit_price),
                "amount": format_money(self.amount, currency),
                "period": period_json(self.period), "source": self.source}


@dataclass(slots=True)
class Draft:
    """An invoice before its number: what a billing date (or a purchase) produces."""

    tenant: str
    kind: InvoiceKind
    currency: str
    vat_rate: Decimal
    period: Period | None
    lines: list[Line]
    billing_date: date | None = None
    # The ClickHouse instant up to which usage was read (R9.4: later rows are "late").
    usage_cutoff: datetime | None = None
    key: str = ""  # idempotency key: the billing date, or the event id (R9.5)
    extra: dict[str, Any] = field(default_factory=dict)


# The columns of an invoice's CSV (`Accept: text/csv`) and of the month's export.
CSV_COLUMNS: Final = ("invoice", "kind", "tenant", "issued_at", "currency", "line",
                      "module", "line_kind", "description", "quantity", "unit_price",
                      "amount", "period_from", "period_to", "invoice_subtotal", "invoice_tax",
                      "invoice_total", "source")


# --- request bodies ------------------------------------------------------------------------


class BillingRunRequest(BaseModel):
    """`POST /v1/billing-runs` (api.md): `date` defaults to today (UTC)."""

    model_config = ConfigDict(extra="forbid")
    date: str | None = Field(default=None, max_length=10)
    tenant: str | None = Field(default=None, min_length=1, max_length=128)


class CreditNoteRequest(BaseModel):
    """`POST /v1/invoices/{number}/credit-notes`: `amount` (gross, tax included) defaults to
    everything left to credit."""

    model_config = ConfigDict(extra="forbid")
    # Few enough digits that scaling to minor units stays exact in Decimal's 28 digits.
    amount: str | None = Field(default=None, max_length=24)
    reason: str = Field(default="", max_length=1000)
