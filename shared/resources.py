"""Counted resources (R7.4): limits on a live count, declared by the catalog.

A counted resource is a number of things a tenant holds now (contacts, secondary accounts,
attached companies). Two usage events move the count, and a check compares it with a limit:
the plan's allowance plus the units of the tenant's live packs of that resource. The catalog
declares them (`shared.catalog.Resource`), so one more needs no release:

- metering reads `events` (which event type adds or removes an instance of which resource)
  and `checkers` (the instance id, `data[key]`, a bounded non-empty string);
- the checks read `allowance`, `resource_of` and `raise_with`.

Attached companies (R7.3) share the limit rule under the id `companies` (the plan's
`companies`, packs of kind `companies`) but keep their built-in events and net counter.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from shared.catalog import Catalog, Pack, Plan
from shared.events import DataChecker, both_checks, resource_checker

COMPANIES: Final = "companies"


@dataclass(frozen=True, slots=True)
class ResourceEvent:
    """What one event type does to a counted resource: add (`created`) or remove the
    instance named by `data[key]`."""

    resource: str
    key: str
    created: bool


NO_RESOURCE_EVENTS: Final[Mapping[str, ResourceEvent]] = MappingProxyType({})


class CountedResources:
    """A catalog's counted resources, indexed once."""

    def __init__(self, catalog: Catalog) -> None:
        self.declared = frozenset(r.id for r in catalog.resources)
        events: dict[str, ResourceEvent] = {}
        for res in catalog.resources:
            events[res.created] = ResourceEvent(res.id, res.key, True)
            events[res.deleted] = ResourceEvent(res.id, res.key, False)
        self.events: Mapping[str, ResourceEvent] = MappingProxyType(events)
        self._plans: dict[str, Plan] = {p.id: p for p in catalog.plans}
        self._resource_of: dict[str, str] = {}
        self._packs: dict[str, list[Pack]] = {}  # resource -> its packs, in catalog order
        for pack in catalog.packs:
            resource = COMPANIES if pack.kind == "companies" else pack.resource
            if resource is not None and pack.kind in ("companies", "resource"):
                self._resource_of[pack.id] = resource
                self._packs.setdefault(resource, []).append(pack)

    def checkers(self, others: Mapping[str, DataChecker] | None = None
                 ) -> dict[str, DataChecker]:
        """`others` (configured meters' types) with every resource event type added; a type
        a meter also declares must pass both checks."""
        merged = dict(others or {})
        for event_type, effect in self.events.items():
            merged[event_type] = both_checks(merged.get(event_type), resource_checker(effect.key))
        return merged

    def resource_of(self, pack_id: str) -> str | None:
        """The counted resource a pack raises, or None (not such a pack, or unknown)."""
        return self._resource_of.get(pack_id)

    def allowance(self, plan_id: str, resource: str) -> int:
        """What the plan grants without a pack: companies from its `companies` (R7.3),
        contacts from `allowances` or else its v1 `contacts`, any other from `allowances`."""
        plan = self._plans.get(plan_id)
        if plan is None:
            return 0
        if resource == COMPANIES:
            return plan.companies
        if resource == "contacts":
            return plan.allowances.get(resource, plan.contacts)
        return plan.allowances.get(resource, 0)

    def raise_with(self, plan_id: str, cycle: str, resource: str, shortfall: int
                   ) -> str | None:
        """The item to buy so the limit grows by `shortfall` (R7.4: named, never bought by
        itself): the smallest pack sold to this plan and cycle whose one unit does it, else
        the largest (several units then); with no such pack, the lowest-ranked higher plan
        whose allowance does it, else the higher plan granting the most. None: nothing sold
        raises it."""
        packs = [p for p in self._packs.get(resource, ()) if cycle in p.price
                 and (p.eligible_plans is None or plan_id in p.eligible_plans)]
        if packs:
            enough = [p for p in packs if p.units >= shortfall]
            return (min(enough, key=_units) if enough else max(packs, key=_units)).id
        plan = self._plans.get(plan_id)
        if plan is None:
            return None
        current = self.allowance(plan_id, resource)
        higher = sorted((p for p in self._plans.values() if p.rank > plan.rank
                         and cycle in p.price and self.allowance(p.id, resource) > current),
                        key=lambda p: p.rank)
        for candidate in higher:
            if self.allowance(candidate.id, resource) - current >= shortfall:
                return candidate.id
        if not higher:
            return None
        return max(higher, key=lambda p: self.allowance(p.id, resource)).id


def _units(pack: Pack) -> int:
    return pack.units
