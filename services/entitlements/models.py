"""Entitlements models: the stored tenant document, request bodies and answers (docs/api.md).

Money is `Decimal` everywhere and a decimal string in JSON (R3.1); times are aware.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from shared.catalog import Cycle
from shared.subscription import Actor, DecimalText, Lot, LotState, UserId

TenantId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]

Action = Literal["buy", "quote", "trial", "request_feature", "renew"]
DecisionKind = Literal["covered", "billable", "denied"]


# --- requests ------------------------------------------------------------------------------


class TenantCreate(BaseModel):
    """`POST /v1/tenants` (docs/api.md "Request bodies"); field names are fixed."""

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
    """`POST /v1/tenants/{tenant}/purchases` (docs/api.md); `item` is a pack or a plan id."""

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


AnswerStatus = Literal["preview", "confirmed", "scheduled", "requested", "trialing"]


class PurchaseAnswer(BaseModel):
    status: AnswerStatus
    lot: LotOut | None
    charges: list[Charge]
    next_cycle_amount: DecimalText | None
    # Issued by invoicing from the `purchase.confirmed` event (docs/entitlements.md).
    invoice: str | None = None
    effective_at: datetime | None = None
    # Lots a plan change makes moot, cancelled at the period end (R4.10).
    cancels: list[str] = Field(default_factory=list)
    # Why a confirmed change charges nothing, when it does not (R4.2).
    note: str | None = None

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def lot_out(lot: Lot) -> LotOut:
    return LotOut(id=lot.id, item=lot.item, quantity=lot.quantity, state=lot.state,
                  ends_at=lot.ends_at)
