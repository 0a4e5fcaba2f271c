"""The rules of a plan's usage charges and minimum commitment (R10.1–R10.4) beyond their
types, each reported at the offending field (R1.4), and the pricing terms of a charge for a
cycle. Pure: the catalog calls `check_usage` as it validates itself; `check_usage_meters`
runs where the declared meters are known too (a service start), since the catalog file
alone cannot tell a declared meter from a typo.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from decimal import Decimal
from typing import TYPE_CHECKING

from shared.billing.pricing import Pricing, Tier

if TYPE_CHECKING:
    from shared.catalog import Catalog, Plan, UsageCharge, UsageTier

Bad = Callable[[str, str], None]


def check_usage(at: str, plan: Plan, module_ids: Collection[str], bad: Bad) -> None:
    """A plan's usage charges and minimum, `at` being the plan's field (`plans.3`)."""
    meters: dict[str, int] = {}
    for j, charge in enumerate(plan.usage):
        where = f"{at}.usage.{j}"
        if charge.meter in meters:
            # Two charges on one meter would bill the same usage twice.
            bad(f"{where}.meter", f"meter '{charge.meter}' is already priced at "
                f"{at}.usage.{meters[charge.meter]}")
        meters.setdefault(charge.meter, j)
        if charge.module is not None and charge.module not in module_ids:
            bad(f"{where}.module", f"unknown module {charge.module!r}")
        _check_model(where, charge, bad)
        _check_limit(where, charge, bad)
    if plan.minimum is not None and not plan.usage:
        bad(f"{at}.minimum", "a minimum commitment applies to usage charges; this plan has "
            "none (R10.3)")


def _check_model(where: str, charge: UsageCharge, bad: Bad) -> None:
    """Each model has the prices it needs and no other (R10.2)."""
    needs = {"per_unit": {"unit_price"}, "graduated": {"tiers"}, "volume": {"tiers"},
             "package": {"package_size", "package_price"}}[charge.model]
    for name in ("unit_price", "tiers", "package_size", "package_price"):
        given = getattr(charge, name) is not None
        if name in needs and not given:
            bad(f"{where}.{name}", f"a {charge.model} charge needs {name}")
        elif name not in needs and given:
            bad(f"{where}.{name}", f"a {charge.model} charge takes no {name}")
    if charge.package_size is not None and charge.package_size == 0:
        bad(f"{where}.package_size", "must be above 0: a package holds at least some units")
    if charge.tiers is not None:
        _check_tiers(f"{where}.tiers", charge.tiers, bad)


def _check_tiers(where: str, tiers: tuple[UsageTier, ...], bad: Bad) -> None:
    """Bounds strictly ascending; the open-ended tier last, and present, so every unit has a
    price."""
    if not tiers:
        bad(where, "at least one tier is needed")
        return
    previous = Decimal(0)
    for k, tier in enumerate(tiers):
        if tier.up_to is None:
            if k != len(tiers) - 1:
                bad(f"{where}.{k + 1}", "a tier after an open-ended one (up_to: null must "
                    "be the last tier)")
            break
        if tier.up_to <= previous:
            bad(f"{where}.{k}.up_to", f"{tier.up_to} is not above the previous bound "
                f"{previous}: tiers are sorted by up_to, ascending")
        previous = max(previous, tier.up_to)
    else:
        bad(f"{where}.{len(tiers) - 1}.up_to", "the last tier must be open-ended (up_to: "
            "null), so that every unit has a price")


def _check_limit(where: str, charge: UsageCharge, bad: Bad) -> None:
    if charge.limit is not None and charge.limit.per_period == 0:
        bad(f"{where}.limit.per_period", "must be above 0")
    previous = Decimal(0)
    for k, fraction in enumerate(charge.thresholds):
        if fraction <= previous:
            bad(f"{where}.thresholds.{k}", "thresholds are fractions above 0, ascending")
        previous = max(previous, fraction)
    if charge.thresholds and charge.limit is None and charge.included == 0:
        bad(f"{where}.thresholds", "thresholds are fractions of the limit or of the included "
            "quantity; this charge has neither (R10.4)")


def check_usage_meters(catalog: Catalog, meters: Collection[str]) -> None:
    """Every usage charge names a known meter: built-in or declared in configuration."""
    from shared.catalog import CatalogError  # the catalog module imports this one

    problems = [(f"plans.{i}.usage.{j}.meter",
                 f"unknown meter '{charge.meter}' (neither built in nor declared in METERS)")
                for i, plan in enumerate(catalog.plans)
                for j, charge in enumerate(plan.usage) if charge.meter not in meters]
    if problems:
        (field, message), *more = problems
        raise CatalogError(field, message, more=tuple(more))


def pricing(charge: UsageCharge, cycle: str) -> Pricing | None:
    """The charge's terms for one cycle; None when a price it needs is not set for it."""
    from shared.catalog import price_for

    if charge.model == "per_unit":
        unit_price = price_for(charge.unit_price, cycle)
        return None if unit_price is None else Pricing(
            "per_unit", included=charge.included, unit_price=unit_price)
    if charge.model == "package":
        price = price_for(charge.package_price, cycle)
        return None if price is None else Pricing(
            "package", included=charge.included, package_size=charge.package_size,
            package_price=price)
    tiers: list[Tier] = []
    for tier in charge.tiers or ():
        unit_price, flat = price_for(tier.unit_price, cycle), price_for(tier.flat, cycle)
        if unit_price is None or flat is None:
            return None
        tiers.append(Tier(tier.up_to, unit_price, flat))
    return Pricing(charge.model, included=charge.included, tiers=tuple(tiers))
