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
from shared.legal import EmailAddress, LegalName, PostalAddress, VatId
from shared.subscription import Actor, BillingProfile, DecimalText, Lot, LotState, UserId

TenantId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]

Action = Literal["buy", "quote", "trial", "request_feature", "renew"]
DecisionKind = Literal["covered", "billable", "denied"]


# --- requests ------------------------------------------------------------------------------


class BillingProfileIn(BaseModel):
    """The tenant's billing profile as given (R9.8): legal name and address required, VAT id
    and e-mail optional; each bounded (shared.legal). Given whole, it replaces the last."""

    model_config = ConfigDict(extra="forbid")
    legal_name: LegalName
    address: PostalAddress
    vat_id: VatId | None = None
    email: EmailAddress | None = None

    def stored(self) -> BillingProfile:
        return BillingProfile(legal_name=self.legal_name, address=self.address,
                              vat_id=self.vat_id, email=self.email)


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
    billing: BillingProfileIn | None = None
    # R10.5: new tenants get the current catalog version; naming an earlier one (a customer
    # signed on an older price list, taken over from another system) is the admin's choice.
    catalog_version: str | None = Field(default=None, min_length=1, max_length=64)


class TenantPatch(BaseModel):
    """`PATCH /v1/tenants/{t}`: tacit renewal (R4.1), the billing profile (R9.8), or both;
    the service refuses a body with neither."""

    model_config = ConfigDict(extra="forbid")
    renewal: bool | None = None
    billing: BillingProfileIn | None = None
    actor: Actor | None = None


class LotAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actor: Actor | None = None


# R4.11: how many items one purchase may carry.
MAX_ITEMS = 20


class PurchaseItem(BaseModel):
    """One item of a purchase of several (R4.11), validated as a single purchase's item."""

    model_config = ConfigDict(extra="forbid")
    item: str = Field(min_length=1, max_length=128)
    quantity: int | None = None


class PurchaseRequest(BaseModel):
    """`POST /v1/tenants/{tenant}/purchases` (docs/api.md); `item` is a pack or a plan id,
    or `items` several of them bought together (R4.11): exactly one of the two forms."""

    model_config = ConfigDict(extra="forbid")
    actor: Actor
    action: Action = "buy"
    item: str | None = Field(default=None, min_length=1, max_length=128)
    quantity: int | None = None
    items: list[PurchaseItem] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    confirm: bool = False


class CheckItem(BaseModel):
    """One decision of `POST /v1/check`."""

    # Strict: `true` is no quantity and `"3"` no level (the whole call is refused, 422).
    model_config = ConfigDict(extra="forbid", strict=True)
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
    # A pack priced per licence: those it was bought for (R4.12); absent for other lots.
    licences: int | None = Field(default=None, exclude_if=lambda value: value is None)


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
                  ends_at=lot.ends_at, licences=lot.licences)
