"""Checks (R6.3, R7.2, R7.3, R7.4, R8.2, R8.3, R10.4, features): is a user, module, feature or
quantity covered, answered from the tenant document and metering's live counters.

A check costs one Redis round trip: the reads it needs are planned from the document last
seen (kept in memory, re-parsed only when it changed), sent with the document itself, and
planned again only when the document changed what the check needs. The decisions are pure
(decisions.py, support.py); this module plans reads and feeds them the values.

What a plan grants and limits is read from the tenant's own catalog version at the instant of
the check (R10.5): a tenant kept on an older price list keeps its limits until it migrates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from services.entitlements import decisions as dec
from services.entitlements import support as sup
from services.entitlements.lifecycle import Effects, advance, current_period, next_due, zone_of
from services.entitlements.models import CheckItem
from services.entitlements.store import EntitlementsStore
from shared import keys
from shared.auth import Principal
from shared.billing.periods import local_date
from shared.catalog_versions import CatalogVersions
from shared.clock import Clock
from shared.errors import AppError, NotFound, ValidationFailed
from shared.subscription import TenantState
from shared.usage_limits import meter_reads, meter_used

# Tenants whose parsed document is kept; past it the cache starts afresh.
CACHED_TENANTS = 100_000


@dataclass(slots=True)
class _Cached:
    raw: str
    state: TenantState
    due: datetime | None
    # The lookups of the tenant's version when no migration moves it at any instant (the
    # usual case), found once per document; None: found again at each check's instant.
    index: dec.CatalogIndex | None


@dataclass(slots=True)
class Query:
    tenant: str
    module: str | None = None
    user: str | None = None
    feature: str | None = None
    quantity: int = 1
    level: int = 1  # support checks (R8.3)


@dataclass(frozen=True, slots=True)
class KeyedCheck:
    """What the hot path read in its one call: the API key record and the check's data."""

    key_record: Any
    now: datetime
    doc: str | None
    reads: list[tuple[str, ...]]
    values: list[Any]


class Checks:
    def __init__(self, store: EntitlementsStore, catalogs: CatalogVersions,
                 indexes: Mapping[str, dec.CatalogIndex], clock: Clock) -> None:
        self.store = store
        self.catalogs = catalogs
        self.indexes = indexes  # by catalog version
        self.index = indexes[catalogs.current.version]
        # A name any version sells may be asked about; the tenant's version answers.
        self.modules = frozenset[str]().union(*(i.modules for i in indexes.values()))
        self.features = frozenset({"emails", "companies", "support"}).union(
            *(i.features | i.resources | i.metered.meters for i in indexes.values()))
        self.clock = clock
        self._cache: dict[str, _Cached] = {}

    def index_of(self, state: TenantState, now: datetime) -> dec.CatalogIndex:
        """The lookups of the catalog version `state` is priced by at `now` (R10.5)."""
        return self.indexes[self.catalogs.of(state, now).version]

    def _index_of_entry(self, entry: _Cached, state: TenantState, now: datetime
                        ) -> dec.CatalogIndex:
        if entry.index is not None and state is entry.state:
            return entry.index
        return self.index_of(state, now)

    def parse_query(self, item: CheckItem) -> Query:
        if item.module is None and item.feature is None:
            raise ValidationFailed("module: name a module or a feature", field="module")
        if item.module is not None and item.feature is not None:
            raise ValidationFailed("feature: ask for a module or a feature, not both",
                                   field="feature")
        if item.module is not None and item.module not in self.modules:
            raise ValidationFailed(f"module: unknown module '{item.module}'", field="module")
        if item.user is not None and item.module is None:
            raise ValidationFailed("module: a user is checked on a module", field="module")
        if item.feature is not None and item.feature not in self.features:
            raise ValidationFailed(f"feature: unknown feature '{item.feature}'",
                                   field="feature")
        quantity = 1 if item.quantity is None else item.quantity
        if not 1 <= quantity <= 1_000_000_000:
            raise ValidationFailed("quantity: between 1 and 1000000000", field="quantity")
        level = 1 if item.level is None else item.level
        if level not in (1, 2, 3):
            raise ValidationFailed("level: support levels are 1, 2 and 3 (R8.3)", field="level")
        if item.level is not None and item.feature != "support":
            raise ValidationFailed("level: only for feature=support", field="level")
        return Query(item.tenant, item.module, item.user, item.feature, quantity, level)

    def _reads(self, query: Query, cached: _Cached | None, now: datetime
               ) -> list[tuple[str, ...]]:
        """The live-counter reads one check needs; some depend on the tenant document."""
        tenant = query.tenant
        index = self.index if cached is None \
            else self._index_of_entry(cached, cached.state, now)
        if query.module is not None and query.user is not None:
            key = keys.users_key(tenant, query.module)
            admin = cached.state.admin_user if cached is not None else query.user
            return [("ZRANK", key, query.user), ("ZRANK", key, admin), ("ZCARD", key)]
        if query.feature == "companies":
            return [("GET", keys.companies_key(tenant))]
        if query.feature in index.resources:  # R7.4: the set's size is the count
            return [("SCARD", keys.resource_key(tenant, query.feature))]
        if query.feature == "support" and cached is not None:  # R8.2, R8.3
            state = cached.state
            today = local_date(now, zone_of(state))
            days = sup.check_days(state, index.catalog, today)
            return [("MGET", *(keys.support_minutes_key(tenant, d) for d in days),
                     *(keys.support_minutes_key(tenant, d, level_3=True) for d in days))]
        if query.feature == "emails" and cached is not None:
            days = period_days(cached.state, now)
            if not days:
                return []
            return [("MGET", *(keys.emails_key(tenant, d) for d in days))]
        if query.feature in index.metered.meters and cached is not None:  # R10.4
            return meter_reads(tenant, query.feature, period_days(cached.state, now))
        return []

    def _entry(self, tenant: str, raw: str | None, now: datetime) -> _Cached:
        if raw is None:
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")
        cached = self._cache.get(tenant)
        if cached is None or cached.raw != raw:
            state = TenantState.model_validate_json(raw)
            if len(self._cache) > CACHED_TENANTS:
                self._cache.clear()
            moves = state.pending_catalog is not None or bool(state.catalog_changes)
            index = None if moves else self.index_of(state, now)
            cached = self._cache[tenant] = _Cached(raw, state, next_due(state), index)
        return cached

    def _decide(self, query: Query, cached: _Cached, now: datetime,
                values: Sequence[Any]) -> dec.Decision:
        state = cached.state
        if cached.due is not None and cached.due <= now:
            state = advance(state, now, Effects())  # not yet run by the scheduler
        today = local_date(now, zone_of(state))
        denial = dec.subscription_denial(state, today)
        if denial is not None:
            return denial
        index = self._index_of_entry(cached, state, now)
        if query.module is not None:
            if query.user is None:
                return dec.module_decision(state, index, query.module)
            user_rank, admin_rank, members = values[0], values[1], int(values[2])
            rank, extra = dec.extra_user_rank(
                None if user_rank is None else int(user_rank),
                None if admin_rank is None else int(admin_rank), members)
            return dec.user_decision(state, index, query.module, query.user, rank, extra)
        if query.feature == "emails":
            used = sum(int(v) for v in values[0] if v is not None) if values else 0
            return dec.email_decision(state, index, used, query.quantity)
        if query.feature == "support":
            days = sup.check_days(state, index.catalog, today)
            raw = values[0] if values else [None] * (2 * len(days))
            minutes = {d: (max(0, int(low or 0)), max(0, int(high or 0)))
                       for d, low, high in zip(days, raw[:len(days)], raw[len(days):],
                                               strict=True)}
            view = sup.support_view(state, index.catalog, zone_of(state), today, minutes)
            return dec.support_decision(view, query.level)
        if query.feature == "companies":
            return dec.company_decision(state, index, max(0, int(values[0] or 0)),
                                        query.quantity)
        if query.feature in index.metered.meters:
            return dec.metered_decision(state, index, query.feature, meter_used(values),
                                        query.quantity)
        if query.feature in index.resources:
            return dec.resource_decision(state, index, query.feature,
                                         int(values[0] or 0), query.quantity)
        assert query.feature is not None
        return dec.feature_decision(state, index, query.feature)

    async def check(self, query: Query) -> dict[str, Any]:
        """One decision in one Redis round trip (two the first time a tenant is seen)."""
        now = await self.clock.now()
        reads = self._reads(query, self._cache.get(query.tenant), now)
        got = await self.store.check_reads(query.tenant, reads)
        return await self._finish(query, now, got.doc, reads, got.values)

    async def check_with_key(self, lookup: tuple[str, ...], tenant: str,
                             query: Query | None) -> KeyedCheck:
        """The hot path: the API key's `lookup`, the tenant document and the check's reads,
        all in one call. The caller judges the key before it asks for the decision."""
        now = await self.clock.now()
        reads = [] if query is None else self._reads(query, self._cache.get(tenant), now)
        replies = await self.store.read_in_one_call(
            [lookup, ("HGET", self.store.keys.tenant(tenant), "doc"), *reads])
        doc = None if replies[1] is None else str(replies[1])
        return KeyedCheck(replies[0], now, doc, reads, list(replies[2:]))

    async def decide_keyed(self, query: Query, keyed: KeyedCheck) -> dict[str, Any]:
        return await self._finish(query, keyed.now, keyed.doc, keyed.reads, keyed.values)

    async def _finish(self, query: Query, now: datetime, doc: str | None,
                      reads: list[tuple[str, ...]], values: list[Any]) -> dict[str, Any]:
        """The decision from the document and the planned reads' values; reads again only
        when the document changed what the check needs."""
        entry = self._entry(query.tenant, doc, now)
        fresh = self._reads(query, entry, now)
        if fresh != reads:
            values = await self.store.run(fresh)
        return self._decide(query, entry, now, values).public()

    async def check_batch(self, items: Sequence[CheckItem], principal: Principal
                          ) -> list[dict[str, Any]]:
        """Many decisions with at most two pipelines, whatever their number."""
        now = await self.clock.now()
        results: list[dict[str, Any] | None] = [None] * len(items)
        queries: list[tuple[int, Query]] = []
        for i, item in enumerate(items):
            try:
                principal.ensure_tenant(item.tenant)
                queries.append((i, self.parse_query(item)))
            except AppError as error:
                results[i] = error.body()
        tenants = sorted({q.tenant for _, q in queries})
        planned = [self._reads(q, self._cache.get(q.tenant), now) for _, q in queries]
        # Decisions on one module share most reads (the admin's rank, the member count): each
        # distinct command is sent once.
        commands = _distinct(cmd for reads in planned for cmd in reads)
        docs, flat = await self.store.batch_reads(tenants, list(commands))
        entries: dict[str, _Cached | None] = {}
        for tenant, raw in zip(tenants, docs, strict=True):
            entries[tenant] = None if raw is None else self._entry(tenant, str(raw), now)
        values = [[flat[commands[cmd]] for cmd in reads] for reads in planned]
        redo: dict[int, list[tuple[str, ...]]] = {}
        for n, ((_, query), reads) in enumerate(zip(queries, planned, strict=True)):
            entry = entries[query.tenant]
            if entry is not None:
                fresh = self._reads(query, entry, now)
                if fresh != reads:
                    redo[n] = fresh
        if redo:
            again_commands = _distinct(cmd for reads in redo.values() for cmd in reads)
            again = await self.store.run(list(again_commands))
            for n, reads in redo.items():
                values[n] = [again[again_commands[cmd]] for cmd in reads]
        for n, (i, query) in enumerate(queries):
            entry = entries[query.tenant]
            if entry is None:
                results[i] = NotFound(f"tenant '{query.tenant}' not found",
                                      field="tenant").body()
            else:
                results[i] = self._decide(query, entry, now, values[n]).public()
        return [r if r is not None else {} for r in results]


def period_days(state: TenantState, now: datetime) -> list[date]:
    """The local days of the tenant's current billing period up to today: those whose live
    counters make its usage so far (R7.2, R10.4)."""
    today = local_date(now, zone_of(state))
    period = current_period(state, today)
    last = min(today, period.end - timedelta(days=1))
    return [period.start + timedelta(days=i) for i in range((last - period.start).days + 1)]


def _distinct(commands: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
    """Each distinct command once, with its position in the pipeline."""
    positions: dict[tuple[str, ...], int] = {}
    for command in commands:
        positions.setdefault(command, len(positions))
    return positions
