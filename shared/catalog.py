"""The product catalog: modules, suites, plans and packs, loaded once at start (R1).

The file (YAML or JSON, chosen by suffix) has exactly the shape `GET /v1/catalog` answers
(docs/api.md): `{version, currency, modules[], suites[], plans[], packs[], email_overage_price}`.
`load_catalog` validates it completely and raises `CatalogError`, whose text names the bad
field as a dotted path (`packs.3.price.P1M: ...`), so an invalid catalog stops the service
with a message a human can act on (R1.4).

Money (R3.1, R1.4): every price is a `Decimal`. In YAML a price may be a string or an integer;
in JSON it must be a string (docs/api.md: money is never a JSON number). Binary floats are refused
everywhere, as are more than 6 fractional digits, exponents, NaN and negative amounts.
`Catalog.to_public()` renders money back as decimal strings.

Prices are keyed by cycle (`P1M`, `P1Y`, `P30D`, `P365D`, R2.2) and are per unit per cycle;
`one_time` packs are priced `{"once": ...}` only (R4.6). Whether every item is priced for every
cycle is the catalog author's choice (an unpriced cycle cannot be bought); the demo catalog
prices every plan and recurring pack for all four.

Rules checked beyond types, each reported at the offending field:
- ids are unique per kind, and no pack shares an id with a plan (a purchase names either);
- plan ranks are unique (rank orders upgrades and downgrades, R4.2, R4.5);
- plan and suite modules, pack module/suite and `eligible_plans` name existing items, once each;
- a `seats` pack names exactly one of `module` / `suite`; only `seats` packs name a suite;
- a `feature` pack names its `feature`; other kinds do not;
- `seats`, `emails` and `companies` packs are never `single_instance` (R4.7);
- `one_time` packs have only a `once` price and no trial; recurring packs have no `once`;
- a module billing extra users has an extra-user price; a `deny` module has none (R6.3);
- `support` packs carry `support` terms (below) and only annual prices (one-year contracts,
  R8.4); other kinds carry no `support` terms;
- `per: licence` (R4.12) only on recurring packs other than support plans, which are priced
  per contract.

Counted resources (R7.4), as `resources`: each `{id, created, deleted, key}` names a live count
moved by two usage-event types whose `data[key]` names the instance. Plans grant
`allowances: {resource: n}` (the v1 field `contacts` is the allowance of a resource `contacts`
when `allowances` does not name it; both given must agree); packs of `kind: resource` name the
`resource` they raise, by `units` per lot. Checked: resource ids unique and not already a check
of their own (`emails`, `companies`, `support`, a feature flag); event types neither built-in
(`shared.events`) nor used twice; allowances and packs name declared resources; only resource
packs name one.

Support terms (our extension of docs/api.md for `kind: support`, R8), as `pack.support`:
- `type`: `bank` (hours per contract year deducted session by session: VIP, VIP Diamond) or
  `daily` (`minutes_per_user_per_day` × subscribed users, the lot quantity: OrangeCare).
- `hours_per_year`: the bank, for `bank` only; a decimal string, whole quarter-hours.
- `minutes_per_user_per_day`: the daily allowance per user, for `daily` only (30 in R8.3).
- `increment_minutes`: sessions are rounded up to this increment (15, R8.1).
- `overage_price_per_hour`: money for time beyond the allowance when no bank has time left,
  billed in arrears (R8.3); null means such time is not sold.
- `covers_level_3`: whether level-3 work may be taken from this plan; always false for
  `daily` plans (R8.3).
- `auto_renew`: renews by itself; only `daily` plans do (R8.4).
- `renewal_discount` (default "0.10") and `late_renewal_grace_days` (default 30): the on-time
  renewal discount and the grace period of a late, prorated renewal (R8.4).

Module-level `support_price_per_hour` (optional, our extension, set on the module that carries
support plans): the hourly rate of support time of a tenant without a support plan, billed in
arrears per session rounded up (docs/support.md); absent: such time is not billed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, TypeVar, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.catalog_usage import check_usage
from shared.events import BUILTIN_TYPES

__all__ = [
    "CYCLES",
    "ONCE",
    "Catalog",
    "CatalogError",
    "Cycle",
    "Module",
    "Pack",
    "PackKind",
    "Plan",
    "PriceKey",
    "Resource",
    "Suite",
    "SupportTerms",
    "UnknownCatalogItem",
    "UsageCharge",
    "UsageLimit",
    "UsageTier",
    "load_catalog",
    "parse_catalog",
    "price_for",
]

Cycle: TypeAlias = Literal["P1M", "P1Y", "P30D", "P365D"]
PriceKey: TypeAlias = Literal["P1M", "P1Y", "P30D", "P365D", "once"]
PackKind: TypeAlias = Literal["seats", "emails", "companies", "feature", "support", "one_time",
                              "resource"]
CYCLES: tuple[Cycle, ...] = get_args(Cycle)
ONCE: Literal["once"] = "once"
MAX_FRACTION_DIGITS = 6  # R1.4

_ANNUAL_CYCLES: frozenset[str] = frozenset({"P1Y", "P365D"})
_QUANTITY_KINDS: frozenset[str] = frozenset({"seats", "emails", "companies", "resource"})
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")

T = TypeVar("T")


# --- field types -------------------------------------------------------------------------


def _as_tuple(value: Any) -> Any:
    """Lists from YAML/JSON become tuples, so that frozen models hold immutable sequences."""
    return tuple(value) if isinstance(value, list) else value


Seq = Annotated[tuple[T, ...], BeforeValidator(_as_tuple)]

Id = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$", min_length=1, max_length=64),
]
# A usage-event type a counted resource declares (R7.4), such as `contact.created`.
EventType = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$", max_length=128)]
# The `data` property naming a resource's instance: one plain name, no dotted path.
PropertyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
# An allowance of a counted resource: events count by ones, so 10^9 is beyond any real limit.
Allowance = Annotated[int, Field(ge=0, le=10**9)]


def _decimal_validator(what: str) -> Callable[[Any, ValidationInfo], Decimal]:
    def parse(value: Any, info: ValidationInfo) -> Decimal:
        if isinstance(value, bool):
            raise PydanticCustomError(
                "decimal_type", "{what} must be a decimal string, not a boolean", {"what": what}
            )
        if isinstance(value, float):
            # R3.1: a float has already lost the exact amount; make the author quote it.
            raise PydanticCustomError(
                "decimal_float",
                '{what} must be a decimal string such as "{example}", not a float: binary '
                "floats are forbidden for money (R3.1)",
                {"what": what, "example": repr(value)},
            )
        if isinstance(value, int):
            if info.context is not None and info.context.get("format") == "json":
                raise PydanticCustomError(
                    "decimal_json_number",
                    '{what} must be a JSON string such as "{example}", never a JSON number',
                    {"what": what, "example": str(value)},
                )
            parsed = Decimal(value)
        elif isinstance(value, str):
            if not _DECIMAL_TEXT.fullmatch(value):
                raise PydanticCustomError(
                    "decimal_parsing",
                    "{what} must be a plain decimal number like \"12.50\", got '{value}'",
                    {"what": what, "value": value},
                )
            parsed = Decimal(value)
        elif isinstance(value, Decimal) and value.is_finite():
            parsed = value
        else:
            raise PydanticCustomError(
                "decimal_type",
                "{what} must be a decimal string, got {type}",
                {"what": what, "type": type(value).__name__},
            )
        exponent = parsed.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > MAX_FRACTION_DIGITS:
            raise PydanticCustomError(
                "decimal_max_places",
                "{what} has {places} fractional digits; at most {max} are allowed (R1.4)",
                {"what": what, "places": -exponent, "max": MAX_FRACTION_DIGITS},
            )
        if parsed.is_signed():
            raise PydanticCustomError(
                "decimal_negative", "{what} must not be negative", {"what": what}
            )
        return parsed

    return parse


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


# A non-negative decimal amount of money (R1.4, R3.1); rendered as a decimal string in JSON.
Money = Annotated[
    Decimal,
    PlainValidator(_decimal_validator("money"), json_schema_input_type=str),
    PlainSerializer(_decimal_text, return_type=str, when_used="json"),
]
# A non-negative decimal quantity (hours, rates), with the same parsing rules as money.
Quantity = Annotated[
    Decimal,
    PlainValidator(_decimal_validator("value"), json_schema_input_type=str),
    PlainSerializer(_decimal_text, return_type=str, when_used="json"),
]


class _Frozen(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- models ------------------------------------------------------------------------------


class Module(_Frozen):
    """A piece of software a subscription can contain (R1.1), and its extra-user terms (R6)."""

    id: Id
    extra_users: Literal["bill", "deny"]
    extra_user_price: dict[Cycle, Money] = Field(default_factory=dict)
    # R8: support time without a support plan, per hour (docs/support.md).
    support_price_per_hour: Money | None = None


class Suite(_Frozen):
    """A named set of modules sold together; seat packs may cover a suite (R1.1, R6.2)."""

    id: Id
    modules: Seq[Id] = Field(min_length=1)


def _cycle_prices(value: Any, info: ValidationInfo) -> Decimal | dict[str, Decimal]:
    """One amount for every cycle, or one per cycle (`{"P1M": ...}`) where they differ."""
    parse = _decimal_validator("price")
    if not isinstance(value, Mapping):
        return parse(value, info)
    if not value:
        raise PydanticCustomError("cycle_prices", "give one price, or one per cycle", {})
    prices: dict[str, Decimal] = {}
    for cycle, amount in value.items():
        if cycle not in CYCLES:
            raise PydanticCustomError("cycle_prices", "'{cycle}' is not a cycle ({cycles})",
                                      {"cycle": str(cycle), "cycles": ", ".join(CYCLES)})
        try:
            prices[cycle] = parse(amount, info)
        except PydanticCustomError as exc:
            raise PydanticCustomError("cycle_prices", "{cycle}: {message}",
                                      {"cycle": cycle, "message": exc.message()}) from None
    return prices


def _cycle_prices_json(value: Decimal | dict[str, Decimal]) -> str | dict[str, str]:
    if isinstance(value, Decimal):
        return _decimal_text(value)
    return {cycle: _decimal_text(amount) for cycle, amount in value.items()}


# Money of a usage charge or a minimum (R10): one amount, or one per cycle.
CyclePrices = Annotated[
    Decimal | dict[str, Decimal],
    PlainValidator(_cycle_prices, json_schema_input_type=str | dict[str, str]),
    PlainSerializer(_cycle_prices_json, when_used="json"),
]


def price_for(prices: Decimal | dict[str, Decimal] | None, cycle: str) -> Decimal | None:
    """The amount of `prices` for a cycle: the one amount, or the cycle's (None: unpriced)."""
    if prices is None or isinstance(prices, Decimal):
        return prices
    return prices.get(cycle)


class UsageTier(_Frozen):
    """Units up to `up_to` (null: without end, last) at `unit_price`, plus `flat` (R10.2)."""

    up_to: Quantity | None
    unit_price: CyclePrices
    flat: CyclePrices = Decimal(0)


class UsageLimit(_Frozen):
    """A per-period limit on a metered usage (R10.4; parsed and checked, not enforced yet)."""

    per_period: Quantity
    mode: Literal["hard", "soft"]


class UsageCharge(_Frozen):
    """A plan's price on a meter, billed in arrears (R10.1, R10.2); checked beyond types by
    `shared.catalog_usage`."""

    meter: str = Field(min_length=1, max_length=64)
    module: Id | None = None
    included: Quantity = Decimal(0)
    model: Literal["per_unit", "graduated", "volume", "package"]
    unit_price: CyclePrices | None = None
    tiers: Seq[UsageTier] | None = None
    package_size: Quantity | None = None
    package_price: CyclePrices | None = None
    limit: UsageLimit | None = None
    # Fractions of the limit (or of the included quantity without one), R10.4.
    thresholds: Seq[Quantity] = ()


class Plan(_Frozen):
    """A tier: included modules, recurring price per cycle and allowances (R1.2)."""

    id: Id
    rank: int = Field(ge=1)
    modules: Seq[Id] = Field(min_length=1)
    price: dict[Cycle, Money] = Field(min_length=1)
    companies: int = Field(ge=0)
    contacts: int = Field(ge=0)
    features: Seq[Id] = ()
    # Counted resources granted without a pack (R7.4); a resource not named grants none.
    allowances: dict[Id, Allowance] = Field(default_factory=dict)
    # Usage charges on meters, billed in arrears (R10.1), and the minimum their total per
    # period commits to (R10.3): one amount, or one per cycle.
    usage: Seq[UsageCharge] = Field(default=(), max_length=64)
    minimum: CyclePrices | None = None


class Resource(_Frozen):
    """A counted resource (R7.4): a live count of instances, each named by `data[key]` of the
    `created` and `deleted` usage events."""

    id: Id
    created: EventType
    deleted: EventType
    key: PropertyName


class SupportTerms(_Frozen):
    """Terms of a `support` pack (R8); see the module docstring for each field."""

    type: Literal["bank", "daily"]
    hours_per_year: Quantity | None = None
    minutes_per_user_per_day: int | None = Field(default=None, ge=1)
    increment_minutes: int = Field(default=15, ge=1)
    overage_price_per_hour: Money | None = None
    covers_level_3: bool = False
    auto_renew: bool = False
    renewal_discount: Quantity = Decimal("0.10")
    late_renewal_grace_days: int = Field(default=30, ge=0)


class Pack(_Frozen):
    """An add-on attached to a subscription (R1.3); `price` is per unit per cycle."""

    id: Id
    kind: PackKind
    module: Id | None = None
    suite: Id | None = None
    feature: Id | None = None
    resource: Id | None = None  # the counted resource a `resource` pack raises (R7.4)
    units: int = Field(default=1, ge=1)
    price: dict[PriceKey, Money] = Field(min_length=1)
    single_instance: bool = False
    trial_days: int | None = Field(default=None, ge=1)
    eligible_plans: Seq[Id] | None = None
    support: SupportTerms | None = None
    # `licence`: a lot costs price × the account's licences, counted when it is bought and
    # again at each renewal (R4.12); `unit`: price × the quantity bought.
    per: Literal["unit", "licence"] = "unit"

    @property
    def recurring(self) -> bool:
        return self.kind != "one_time"


class UnknownCatalogItem(KeyError):
    """A lookup named an id the catalog does not have."""

    def __init__(self, kind: str, item_id: str) -> None:
        super().__init__(item_id)
        self.kind = kind
        self.item_id = item_id

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.item_id!r}"


class CatalogError(ValueError):
    """An invalid catalog. `field` is a dotted path (`packs.3.price.P1M`, or `catalog` for the
    whole document); `problems` lists every problem found, this one first."""

    def __init__(self, field: str, message: str, *, more: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message
        self.problems: tuple[tuple[str, str], ...] = ((field, message), *more)

    def __str__(self) -> str:
        return "\n".join(f"{field}: {message}" for field, message in self.problems)


def _lookup(table: Mapping[str, T], kind: str, item_id: str) -> T:
    try:
        return table[item_id]
    except KeyError:
        raise UnknownCatalogItem(kind, item_id) from None


class _Index:
    """A catalog's lookups by id, and the modules each seat pack covers (R6.2)."""

    def __init__(self, catalog: Catalog) -> None:
        self.modules = {m.id: m for m in catalog.modules}
        self.suites = {s.id: s for s in catalog.suites}
        self.plans = {p.id: p for p in catalog.plans}
        self.packs = {p.id: p for p in catalog.packs}
        self.plan_modules = {p.id: frozenset(p.modules) for p in catalog.plans}
        self.suite_modules = {s.id: frozenset(s.modules) for s in catalog.suites}
        # R6.2: a module's seats come from its own seat packs and those of suites holding it.
        self.seat_packs = {m.id: frozenset(
            p.id for p in catalog.packs if p.kind == "seats" and (
                p.module == m.id
                or (p.suite is not None and m.id in self.suite_modules.get(p.suite, ()))))
            for m in catalog.modules}


class Catalog(_Frozen):
    """The whole catalog (R1). Lookups are indexed once, at first use."""

    version: str = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    modules: Seq[Module] = Field(min_length=1)
    suites: Seq[Suite] = ()
    plans: Seq[Plan] = Field(min_length=1)
    packs: Seq[Pack] = ()
    email_overage_price: Money | None = None
    # Counted resources (R7.4); a catalog declares a few, not hundreds.
    resources: Seq[Resource] = Field(default=(), max_length=64)

    @model_validator(mode="after")
    def _cross_checked(self) -> Catalog:
        problems = _cross_check(self)
        if problems:
            (field, message), *more = problems
            raise CatalogError(field, message, more=tuple(more))
        return self

    @cached_property
    def by_id(self) -> _Index:
        """Lookups built once. A cached property, not private attributes: those are read
        through pydantic's `__getattr__`, some forty times slower on the billing hot path."""
        return _Index(self)

    # --- lookups -----------------------------------------------------------------------

    def module(self, module_id: str) -> Module:
        return _lookup(self.by_id.modules, "module", module_id)

    def suite(self, suite_id: str) -> Suite:
        return _lookup(self.by_id.suites, "suite", suite_id)

    def plan(self, plan_id: str) -> Plan:
        return _lookup(self.by_id.plans, "plan", plan_id)

    def pack(self, pack_id: str) -> Pack:
        return _lookup(self.by_id.packs, "pack", pack_id)

    def item(self, item_id: str) -> Plan | Pack:
        """A purchasable item by id: a plan (plan change) or a pack. Ids never collide."""
        found = self.by_id.plans.get(item_id) or self.by_id.packs.get(item_id)
        if found is None:
            raise UnknownCatalogItem("item", item_id)
        return found

    def modules_of_plan(self, plan_id: str) -> frozenset[str]:
        return _lookup(self.by_id.plan_modules, "plan", plan_id)

    def seat_packs(self, module_id: str) -> frozenset[str]:
        """The packs whose seats cover the module (R6.2); none for an unknown module."""
        return self.by_id.seat_packs.get(module_id, frozenset())

    def suite_modules(self, suite_id: str) -> frozenset[str]:
        return _lookup(self.by_id.suite_modules, "suite", suite_id)

    def support_price_per_hour(self) -> Decimal | None:
        """R8: the hourly rate of support time without a support plan (the first module
        that sets `support_price_per_hour`), or None: not billed."""
        return next((m.support_price_per_hour for m in self.modules
                     if m.support_price_per_hour is not None), None)

    def to_public(self) -> dict[str, Any]:
        """The `GET /v1/catalog` body (docs/api.md): plain JSON types, money as decimal strings."""
        return self.model_dump(mode="json")


# --- cross-field rules -------------------------------------------------------------------


class _Problems:
    """Every cross-reference problem of a catalog, as (field path, message)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def bad(self, field: str, message: str) -> None:
        self.found.append((field, message))

    def index(self, name: str, kind: str, ids: list[str]) -> set[str]:
        """The ids of one list, each duplicate named with the index of its first use."""
        first: dict[str, int] = {}
        for i, item_id in enumerate(ids):
            if item_id in first:
                self.bad(f"{name}.{i}.id",
                         f"duplicate {kind} id {item_id!r} (first at {name}.{first[item_id]})")
            else:
                first[item_id] = i
        return set(first)

    def refs(self, field: str, kind: str, values: tuple[str, ...], known: set[str] | None
             ) -> None:
        """Each value known (when `known` is given) and listed once."""
        seen: set[str] = set()
        for j, value in enumerate(values):
            if known is not None and value not in known:
                self.bad(f"{field}.{j}", f"unknown {kind} {value!r}")
            elif value in seen:
                self.bad(f"{field}.{j}", f"{kind} {value!r} listed twice")
            seen.add(value)


def _cross_check(cat: Catalog) -> list[tuple[str, str]]:
    problems = _Problems()
    module_ids = problems.index("modules", "module", [m.id for m in cat.modules])
    suite_ids = problems.index("suites", "suite", [s.id for s in cat.suites])
    plan_ids = problems.index("plans", "plan", [p.id for p in cat.plans])
    problems.index("packs", "pack", [p.id for p in cat.packs])
    for i, module in enumerate(cat.modules):
        if module.extra_users == "bill" and not module.extra_user_price:
            problems.bad(f"modules.{i}.extra_user_price",
                         "a module that bills extra users needs an extra-user price (R6.4)")
        if module.extra_users == "deny" and module.extra_user_price:
            problems.bad(f"modules.{i}.extra_user_price", "must be empty: extra users are "
                         "denied on this module, never billed (R6.3)")
    for i, suite in enumerate(cat.suites):
        problems.refs(f"suites.{i}.modules", "module", suite.modules, module_ids)
    _check_plans(cat, module_ids, problems)
    for i, plan in enumerate(cat.plans):
        check_usage(f"plans.{i}", plan, module_ids, problems.bad)
    for i, pack in enumerate(cat.packs):
        _check_pack(f"packs.{i}", pack, module_ids, suite_ids, plan_ids, problems.bad)
        if pack.per == "licence" and pack.kind in ("one_time", "support"):
            problems.bad(f"packs.{i}.per", f"a {pack.kind} pack cannot be priced per licence: "
                         "only recurring packs renewed with the subscription are (R4.12)")
        if pack.eligible_plans is not None:
            if not pack.eligible_plans:
                problems.bad(f"packs.{i}.eligible_plans", "an empty list makes the pack "
                             "unsellable; use null for every plan (R8.5)")
            problems.refs(f"packs.{i}.eligible_plans", "plan", pack.eligible_plans, plan_ids)
    _check_resources(cat, problems)
    return problems.found


# What `feature=` already answers besides feature flags: a resource of one of these names
# could never be checked (R7.4).
CHECKED_NAMES: frozenset[str] = frozenset({"emails", "companies", "support"})


def _check_resources(cat: Catalog, problems: _Problems) -> None:
    """R7.4: every counted resource checkable by its id and counted by event types of its
    own; allowances and packs naming declared resources only."""
    ids = problems.index("resources", "resource", [r.id for r in cat.resources])
    flags = {f for p in cat.plans for f in p.features} | {
        p.feature for p in cat.packs if p.feature is not None}
    owners: dict[str, str] = {}  # event type -> the field that first declared it
    for i, res in enumerate(cat.resources):
        if res.id in CHECKED_NAMES or res.id in flags:
            what = "a feature flag" if res.id in flags else "a built-in check"
            problems.bad(f"resources.{i}.id", f"'{res.id}' is already {what} (feature="
                         f"{res.id}); a counted resource needs a name of its own (R7.4)")
        for name, event_type in (("created", res.created), ("deleted", res.deleted)):
            at = f"resources.{i}.{name}"
            if event_type in BUILTIN_TYPES:
                problems.bad(at, f"'{event_type}' is a built-in event type (docs/events.md)")
            elif event_type in owners:
                problems.bad(at, f"'{event_type}' is already declared at {owners[event_type]}")
            else:
                owners[event_type] = at
    for i, plan in enumerate(cat.plans):
        for name in plan.allowances:
            if name not in ids:  # companies included: the plan's `companies` (R7.3)
                problems.bad(f"plans.{i}.allowances.{name}", f"unknown resource '{name}'")
        given = plan.allowances.get("contacts")
        if given is not None and given != plan.contacts:
            problems.bad(f"plans.{i}.allowances.contacts", f"{given} disagrees with the "
                         f"plan's contacts ({plan.contacts}); give one value")
    for i, pack in enumerate(cat.packs):
        if pack.kind == "resource" and pack.resource is None:
            problems.bad(f"packs.{i}.resource", "a resource pack names the counted resource "
                         "it raises (R7.4)")
        elif pack.kind == "resource" and pack.resource not in ids:
            problems.bad(f"packs.{i}.resource", f"unknown resource '{pack.resource}'")
        elif pack.kind != "resource" and pack.resource is not None:
            problems.bad(f"packs.{i}.resource",
                         f"only resource packs name a resource, not {pack.kind} packs")


def _check_plans(cat: Catalog, module_ids: set[str], problems: _Problems) -> None:
    ranks: dict[int, str] = {}
    for i, plan in enumerate(cat.plans):
        problems.refs(f"plans.{i}.modules", "module", plan.modules, module_ids)
        problems.refs(f"plans.{i}.features", "feature", plan.features, None)
        if plan.rank in ranks:
            problems.bad(f"plans.{i}.rank",
                         f"rank {plan.rank} is already plan {ranks[plan.rank]!r}'s; ranks "
                         "order upgrades and downgrades and must be unique (R4.2, R4.5)")
        else:
            ranks[plan.rank] = plan.id


def _check_pack(
    at: str,
    pack: Pack,
    module_ids: set[str],
    suite_ids: set[str],
    plan_ids: set[str],
    bad: Callable[[str, str], None],
) -> None:
    if pack.id in plan_ids:
        bad(f"{at}.id", f"{pack.id!r} is also a plan id; purchases name plans and packs alike")
    if pack.module is not None and pack.module not in module_ids:
        bad(f"{at}.module", f"unknown module {pack.module!r}")
    if pack.suite is not None and pack.suite not in suite_ids:
        bad(f"{at}.suite", f"unknown suite {pack.suite!r}")

    if pack.kind == "seats":
        if (pack.module is None) == (pack.suite is None):
            bad(f"{at}.module", "a seats pack names exactly one of module or suite (R6.2)")
    elif pack.suite is not None:
        bad(f"{at}.suite", f"only seats packs name a suite, not {pack.kind} packs")

    if pack.kind == "feature" and pack.feature is None:
        bad(f"{at}.feature", "a feature pack must name the feature it grants (R4.7)")
    if pack.kind != "feature" and pack.feature is not None:
        bad(f"{at}.feature", f"only feature packs name a feature, not {pack.kind} packs")

    if pack.kind in _QUANTITY_KINDS and pack.single_instance:
        bad(
            f"{at}.single_instance",
            f"{pack.kind} packs are bought in as many lots as needed; must be false (R4.7)",
        )

    if pack.kind == "one_time":
        for key in pack.price:
            if key != ONCE:
                bad(f"{at}.price.{key}", "a one_time pack has only a 'once' price (R4.6)")
        if ONCE not in pack.price:
            bad(f"{at}.price", "a one_time pack needs a 'once' price (R4.6)")
        if pack.trial_days is not None:
            bad(f"{at}.trial_days", "a one_time item has no free trial")
    elif ONCE in pack.price:
        bad(
            f"{at}.price.{ONCE}",
            f"a recurring {pack.kind} pack is priced per cycle; 'once' is for one_time packs "
            "(R4.6)",
        )

    if pack.kind == "support":
        if pack.support is None:
            bad(f"{at}.support", "a support pack needs its support terms (R8)")
        else:
            _check_support(f"{at}.support", pack.support, bad)
        for key in pack.price:
            if key not in _ANNUAL_CYCLES:
                bad(
                    f"{at}.price.{key}",
                    "support plans are one-year contracts; price them for P1Y or P365D (R8.4)",
                )
    elif pack.support is not None:
        bad(f"{at}.support", f"only support packs carry support terms, not {pack.kind} packs")


def _check_support(at: str, terms: SupportTerms, bad: Callable[[str, str], None]) -> None:
    if terms.type == "bank":
        if terms.hours_per_year is None or terms.hours_per_year == 0:
            bad(f"{at}.hours_per_year", "a bank plan needs a positive number of hours (R8.2)")
        elif (terms.hours_per_year * 4) % 1 != 0:
            bad(f"{at}.hours_per_year", "must be whole quarter-hours (R8.1)")
        if terms.minutes_per_user_per_day is not None:
            bad(f"{at}.minutes_per_user_per_day", "only daily plans have a daily allowance")
        if terms.auto_renew:
            bad(f"{at}.auto_renew", "only daily plans renew automatically (R8.4)")
    else:
        if terms.minutes_per_user_per_day is None:
            bad(f"{at}.minutes_per_user_per_day", "a daily plan needs its allowance (R8.3)")
        if terms.hours_per_year is not None:
            bad(f"{at}.hours_per_year", "only bank plans hold hours")
        if terms.covers_level_3:
            bad(f"{at}.covers_level_3", "level-3 work is excluded from daily plans (R8.3)")
    if terms.renewal_discount > 1:
        bad(f"{at}.renewal_discount", "a discount rate is between 0 and 1")


# --- loading -----------------------------------------------------------------------------


class _StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictYamlLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictYamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _read(path: Path) -> tuple[Any, Literal["yaml", "json"]]:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise CatalogError(
            "catalog", f"{path}: unsupported suffix {suffix!r}; use .yaml, .yml or .json"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError("catalog", f"{path}: cannot read: {exc}") from exc
    if suffix == ".json":
        try:
            return json.loads(text, object_pairs_hook=_json_object), "json"
        except ValueError as exc:
            raise CatalogError("catalog", f"{path}: invalid JSON: {exc}") from exc
    try:
        return yaml.load(text, Loader=_StrictYamlLoader), "yaml"  # a SafeLoader
    except yaml.YAMLError as exc:
        raise CatalogError("catalog", f"{path}: invalid YAML: {exc}") from exc


def _owner_hint(data: Any, loc: tuple[int | str, ...]) -> str:
    """` (pack 'seats-crm')` for errors inside a list item, to find it in the file."""
    kinds = {"modules": "module", "suites": "suite", "plans": "plan", "packs": "pack",
             "resources": "resource"}
    if len(loc) < 3 or loc[0] not in kinds or not isinstance(loc[1], int):
        return ""
    if not isinstance(data, Mapping):
        return ""
    items = data.get(loc[0])
    if isinstance(items, list) and 0 <= loc[1] < len(items) and isinstance(items[loc[1]], dict):
        item_id = items[loc[1]].get("id")
        if isinstance(item_id, str):
            return f" ({kinds[str(loc[0])]} {item_id!r})"
    return ""


def _from_validation_error(exc: ValidationError, data: Any) -> CatalogError:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, CatalogError):
            problems.extend(cause.problems)
            continue
        loc = tuple(err["loc"])
        field = ".".join(str(part) for part in loc) or "catalog"
        message = err["msg"].removeprefix("Value error, ")
        problems.append((field, message + _owner_hint(data, loc)))
    (field, message), *more = problems
    return CatalogError(field, message, more=tuple(more))


def parse_catalog(data: Any, *, source_format: Literal["yaml", "json"] = "yaml") -> Catalog:
    """Validate already-parsed catalog data; raises `CatalogError` naming the field."""
    if not isinstance(data, Mapping):
        raise CatalogError("catalog", f"must be a mapping, got {type(data).__name__}")
    try:
        return Catalog.model_validate(data, context={"format": source_format})
    except ValidationError as exc:
        raise _from_validation_error(exc, data) from None


def load_catalog(path: Path) -> Catalog:
    """Load and validate the catalog file (YAML or JSON by suffix) (R1.4)."""
    data, source_format = _read(path)
    return parse_catalog(data, source_format=source_format)
