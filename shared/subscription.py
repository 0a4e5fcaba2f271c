"""The tenant document: one tenant's subscription, the contract between the services.

Entitlements owns it (it writes it, one JSON value per tenant, changed by compare-and-set);
invoicing reads it to bill. Both use this one model, so a field renamed here fails mypy in
every service that reads it, instead of being billed with a default. The document carries
`schema_version`; a reader refuses a version it does not know rather than misread it.

Schema 2 added the catalog version a tenant is billed by (R10.5). A schema-1 document (written
before versions existed) still reads, as schema 2 with no `catalog_version`: the oldest catalog
version, the one it was created under. A release that reads only schema 1 refuses schema-2
documents instead of billing a pinned tenant at the current prices, so readers (invoicing)
are upgraded before the writer (entitlements).

Money is `Decimal`, a decimal string in JSON (R3.1); times are aware.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
)
from redis.asyncio import Redis

from shared.catalog import Cycle, PackKind
from shared.keys import EntitlementsKeys
from shared.times import zone

SCHEMA_VERSION: Final = 2
# Schemas this release reads; an older one is brought up to SCHEMA_VERSION as it is read.
READABLE_SCHEMAS: Final = frozenset({1, 2})

# A decimal amount rendered as a plain decimal string in JSON (R3.1).
DecimalText = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str,
                                                 when_used="json")]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=256)]

# `sub_account`: a user of a secondary or multi-user account, who may pay for nothing (R5.1).
ActorRole = Literal["owner", "admin", "supervisor", "agent", "sub_account"]
LotState = Literal["active", "cancelled", "trialing", "expired"]
TenantStatus = Literal["scheduled", "active", "ended"]


V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)


class _Change(Protocol[V_co]):
    """What a value was until when (`PlanChange`, `CatalogChange`)."""

    @property
    def at(self) -> datetime: ...

    @property
    def previous(self) -> V_co: ...

class Actor(BaseModel):
    """Who acts in the product (R5): a user of the tenant with a role in its account."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    user_id: UserId
    role: ActorRole


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
    # Daily plans: id of the `purchase.confirmed` that invoiced that renewal, so declining it
    # later names the invoice to credit (R8.6).
    renewal_event: str | None = None
    # Bank plans: days before the contract end already announced by `support.renewal_due`,
    # committed with the event so it is never sent twice (R8.6).
    renewal_notices: list[int] = Field(default_factory=list)
    auto_renew: bool = False  # the pack's terms at purchase (R8.4: daily plans)
    renewal_discount: DecimalText | None = None
    # Why a cancelled lot ends: None when the tenant cancelled it, `plan_change` when a plan
    # change made it moot (R4.10), so that undoing the change can restore it.
    cancel_reason: Literal["plan_change"] | None = None
    # A pack priced per licence (R4.12): the licences counted when it was bought. Each
    # renewal counts them again, so this only says what the purchase charged for.
    licences: int | None = None

    @property
    def live(self) -> bool:
        """Grants its pack now: active, cancelled (until the period end) or trialing (R4.4)."""
        return self.state != "expired"

    def active_at(self, instant: datetime) -> bool:
        """Granting at `instant` (expired lots keep their `ends_at`)."""
        if self.bought_at > instant:
            return False
        return self.ends_at is None or self.ends_at > instant

    def active_during(self, start: datetime, end: datetime) -> bool:
        """Granting at some moment of `[start, end)`."""
        return self.bought_at < end and (self.ends_at is None or self.ends_at > start)


class PlanChange(BaseModel):
    """The plan was `previous` until `at` (an upgrade, or a downgrade taking effect)."""

    at: AwareDatetime
    previous: str


class CatalogChange(BaseModel):
    """The catalog version was `previous` until `at` (a migration taking effect, R10.5)."""

    at: AwareDatetime
    previous: str | None


class BillingProfile(BaseModel):
    """Who the tenant is on its invoices (R9.8): the buyer each one names when issued.

    Requests check the shapes (`shared.legal`); the stored document only reads them back,
    so a rule tightened later never makes an existing document unreadable."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    legal_name: str
    address: str
    vat_id: str | None = None
    email: str | None = None


class TenantState(BaseModel):
    """One tenant's subscription; stored as one JSON value, changed by compare-and-set."""

    model_config = ConfigDict(extra="ignore")
    schema_version: int = SCHEMA_VERSION
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
    # None until the tenant gives one: documents written before it existed read as None,
    # and such a tenant is invoiced under its id (R9.8).
    billing: BillingProfile | None = None
    # R10.5: the catalog version the tenant is billed by; None (schema 1) is the oldest one.
    catalog_version: str | None = None
    # A confirmed migration: the version the tenant moves to at `pending_catalog_at`, the
    # start of its next period; and every move made, oldest first, for late corrections.
    pending_catalog: str | None = None
    pending_catalog_at: AwareDatetime | None = None
    catalog_changes: list[CatalogChange] = Field(default_factory=list)
    version: int = 0

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in READABLE_SCHEMAS:
            raise ValueError(f"tenant document schema {value} is not known here (this "
                             f"release reads {sorted(READABLE_SCHEMAS)})")
        return SCHEMA_VERSION  # schema 1 lacks only fields whose defaults read it right

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.time_zone)

    def record_plan_change(self, at: datetime, plan: str) -> None:
        """Move to `plan` from `at`, remembering the one left (invoicing reads it)."""
        self.plan_changes.append(PlanChange(at=at, previous=self.plan))
        self.plan = plan

    def plan_at(self, instant: datetime) -> str:
        """The plan in force at `instant`: a scheduled downgrade applies at its instant (R4.5),
        and before a recorded change the plan it left was."""
        return _in_force(instant, self.plan, self.plan_changes,
                         self.pending_plan, self.pending_plan_at)

    def catalog_version_at(self, instant: datetime) -> str | None:
        """The catalog version in force at `instant` (None: the oldest), as `plan_at` reads
        the plan: a confirmed migration from its instant, a past one before its instant."""
        return _in_force(instant, self.catalog_version, self.catalog_changes,
                         self.pending_catalog, self.pending_catalog_at)

    def plan_changes_within(self, start: datetime, end: datetime) -> list[datetime]:
        """The instants in (start, end) at which the plan changed, in order."""
        return [c.at for c in self.plan_changes if start < c.at < end]

    def end_instant(self) -> datetime | None:
        """When the subscription ends (renewal off, R4.1), or None while it renews."""
        if self.renewal and self.status != "ended":
            return None
        return self.ends_at


def _in_force(instant: datetime, current: V, changes: Sequence[_Change[V]],
              pending: V | None, pending_at: datetime | None) -> V:
    """A value with a history (`changes`, oldest first: each says what it was until when)
    and perhaps a pending change: what it is at `instant`."""
    if pending is not None and pending_at is not None and pending_at <= instant:
        return pending
    value = current
    for change in reversed(changes):
        if instant >= change.at:
            break
        value = change.previous
    return value


async def read_documents(redis: Redis, keys: EntitlementsKeys, tenants: Sequence[str]
                         ) -> dict[str, TenantState]:
    """The documents of those `tenants` that exist, in one pipeline: how a service other
    than their owner reads them (a document of an unknown schema version raises)."""
    if not tenants:
        return {}
    pipe = redis.pipeline(transaction=False)
    for tenant in tenants:
        pipe.hget(keys.tenant(tenant), "doc")
    docs = await pipe.execute()
    return {tenant: TenantState.model_validate_json(doc)
            for tenant, doc in zip(tenants, docs, strict=True) if doc is not None}
