"""Entitlements models: the stored tenant document, request bodies and answers (api.md).

Money is `Decimal` everywhere and a decimal string in JSON (R3.1); times are aware.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from shared.catalog import Cycle, PackKind

# A decimal amount rendered as a plain decimal string in JSON (R3.1).
DecimalText = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str,
                                                 when_used="json")]
TenantId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]

ActorRole = Literal["owner", "admin", "supervisor", "agent"]
LotState = Literal["active", "cancelled", "trialing", "expired"]
TenantStatus = Literal["scheduled", "active", "ended"]
Action = Literal["buy", "quote", "trial", "request_feature", "renew"]
DecisionKind = Literal["covered", "billable", "denied"]


class Actor(BaseModel):
    """Who acts in the product (R5): a user of the tenant with a role in its account."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    user_id: UserId
    role: ActorRole


# --- the stored tenant document ------------------------------------------------------------


class Lot(BaseModel):
    """Packs bought together (R4.4): cancelled, uncancelled and expired as a whole."""

    model_config = ConfigDict(extra="ignore")
    id: str
    item: str
    kind: PackKind
    quantity: int
    units: int
    state: LotState
    bought_at: AwareDatetime
    # When it stops granting: set when cancelled, trialing, or the subscription ends.
    ends_at: AwareDatetime | None = None
    trial: bool = False
    unit_price: DecimalText | None = None
    actor: Actor | None = None
    # Support contracts (R8): one contract year [contract_start, contract_end) in local days.
    contract_start: date | None = None
    contract_end: date | None = None
    renews: str | None = None  # the lot this one renews (R8.4)
    # A daily plan rolls over in place: the first contract's start stays here (R8.3).
    since: date | None = None
    carry_over: bool = False  # renewed on time: the previous bank's remainder comes along
    renewal_invoiced: date | None = None  # daily plans: contract end whose renewal is billed
    auto_renew: bool = False  # the pack's terms at purchase (R8.4: daily plans)
    renewal_discount: DecimalText | None = None

    @property
    def live(self) -> bool:
        """Grants its pack now: active, cancelled (until the period end) or trialing (R4.4)."""
        return self.state != "expired"


class PlanChange(BaseModel):
    """The plan was `previous` until `at` (an upgrade, or a downgrade taking effect)."""

    at: AwareDatetime
    previous: str


class TenantState(BaseModel):
    """One tenant's subscription; stored as one JSON value, changed by compare-and-set."""

    model_config = ConfigDict(extra="ignore")
    id: str
    plan: str
    cycle: Cycle
    anchor: date
    time_zone: str
    currency: str
    vat_rate: DecimalText
    admin_user: str
    account_allows_quotes: bool = False
    renewal: bool = True
    status: TenantStatus = "active"
    pending_plan: str | None = None
    pending_plan_at: AwareDatetime | None = None
    # Every change, oldest first: invoicing reads the plan in force in any period it bills,
    # adjustments (R9.4) reaching far back; a few a year at most.
    plan_changes: list[PlanChange] = Field(default_factory=list)
    ends_at: AwareDatetime | None = None
    created_at: AwareDatetime
    lots: list[Lot] = Field(default_factory=list)
    trials_used: list[str] = Field(default_factory=list)
    version: int = 0

    def record_plan_change(self, at: datetime, plan: str) -> None:
        """Move to `plan` from `at`, remembering the one left (invoicing reads it)."""
        self.plan_changes.append(PlanChange(at=at, previous=self.plan))
        self.plan = plan


# --- requests ------------------------------------------------------------------------------


class TenantCreate(BaseModel):
    """`POST /v1/tenants` (api.md "Request bodies"); field names are fixed."""

    model_config = ConfigDict(extra="forbid")
    id: TenantId
    plan: str
    cycle: Cycle = "P1M"
    anchor: date | None = None
    time_zone: str
    currency: str
    vat_rate: str = Field(description="decimal string between 0 and 1, e.g. \"0.20\"")
    admin_user: UserId
    account_allows_quotes: bool = False


class TenantPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    renewal: bool
    actor: Actor | None = None


class LotAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actor: Actor | None = None


class PurchaseRequest(BaseModel):
    """`POST /v1/tenants/{tenant}/purchases` (api.md); `item` is a pack or a plan id."""

    model_config = ConfigDict(extra="forbid")
    actor: Actor
    action: Action = "buy"
    item: str = Field(min_length=1, max_length=128)
    quantity: int | None = None
    confirm: bool = False


class CheckItem(BaseModel):
    """One decision of `POST /v1/check`."""

    model_config = ConfigDict(extra="forbid")
    tenant: Name
    module: Name | None = None
    user: UserId | None = None
    feature: Name | None = None
    quantity: int | None = None
    level: int | None = None  # feature=support: the session's level (R8.3)


class CheckBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checks: list[CheckItem]


# --- answers -------------------------------------------------------------------------------


class PeriodOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: date = Field(alias="from")
    to: date


class Charge(BaseModel):
    kind: Literal["proration", "one_time", "support_contract", "support_renewal"]
    description: str
    amount: DecimalText
    period: PeriodOut | None = None
    item: str
    quantity: int
    unit_price: DecimalText


class LotOut(BaseModel):
    id: str
    item: str
    quantity: int
    state: LotState
    ends_at: datetime | None


class PurchaseAnswer(BaseModel):
    status: Literal["preview", "confirmed", "scheduled", "requested", "trialing"]
    lot: LotOut | None
    charges: list[Charge]
    next_cycle_amount: DecimalText | None
    # Issued by invoicing from the `purchase.confirmed` event (docs/entitlements.md).
    invoice: str | None = None
    effective_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def lot_out(lot: Lot) -> LotOut:
    return LotOut(id=lot.id, item=lot.item, quantity=lot.quantity, state=lot.state,
                  ends_at=lot.ends_at)
