"""Usage thresholds (R10.4): `usage.threshold_reached` once per threshold, period, tenant and
meter, on `subscription-events`.

Metering bumps a (tenant, meter) in a touched hash in the same call that moves the meter's
live counters, so no counter moves unseen, even across a crash. This watcher looks at each
touched pair: the tenant's period so far from the same counters the check reads, then the
thresholds reached. One Lua call (store.py) marks each new one and writes its event to the
outbox the publisher drains, then settles the touch. A crash before that call leaves the
touch to look at again; after it, the marks keep a second look from queueing anything. The
outbox makes the publication itself survive a crash (worker.py). Any number of replicas may
watch: the marks decide who queues an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.entitlements.checks import period_days
from services.entitlements.lifecycle import Effects, current_period, zone_of
from services.entitlements.store import EntitlementsStore
from shared.billing.periods import Period, local_date
from shared.catalog import UsageCharge
from shared.catalog_versions import CatalogVersions
from shared.clock import Clock
from shared.consumer import LoopHealth
from shared.redis import text
from shared.subscription import TenantState
from shared.usage_limits import (
    Threshold,
    charge_on,
    meter_reads,
    meter_used,
    reached,
    touched_parts,
)

log = logging.getLogger(__name__)

THRESHOLD_REACHED = "usage.threshold_reached"
# Marks outlive the longest period (a year) they could be asked about again.
MARK_TTL_S = 800 * 86_400
# Touched pairs looked at per page of the touched hash.
PAGE = 200


def decimal_text(value: Decimal) -> str:
    """`0.8`, `800000`: no exponent, no trailing zeros."""
    return format(value.normalize(), "f")


def threshold_event(state: TenantState, charge: UsageCharge, threshold: Threshold,
                    used: Decimal, period: Period, now: datetime
                    ) -> tuple[str, str, str, bytes]:
    """(mark, event id, Kafka key, event) of one reached threshold (docs/events.md)."""
    limit = None if charge.limit is None else {
        "per_period": decimal_text(charge.limit.per_period), "mode": charge.limit.mode}
    effects = Effects()
    event_id = effects.record(state.id, THRESHOLD_REACHED, now, {
        "meter": charge.meter, "module": charge.module, "plan": state.plan,
        "threshold": decimal_text(threshold.fraction), "of": threshold.of,
        "level": decimal_text(threshold.level), "used": decimal_text(used),
        "included": decimal_text(charge.included), "limit": limit,
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()}},
        actor=None)
    _, key, value = effects.events[0]
    return decimal_text(threshold.fraction), event_id, key, value


@dataclass
class ThresholdWatcher:
    """Looks at the touched (tenant, meter) pairs every `poll_s`."""

    store: EntitlementsStore
    catalogs: CatalogVersions
    clock: Clock
    notify: Callable[[], None]
    poll_s: float
    _cursor: int = field(default=0, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def start(self, health: LoopHealth) -> None:
        self._task = asyncio.create_task(self._run(), name="entitlements-thresholds")
        health.supervise(self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([self._task], timeout=5.0)
            self._task = None

    async def look_once(self) -> int:
        """Look at one page of touched pairs; how many events were queued."""
        self._cursor, page = await self.store.touched(self._cursor, PAGE)
        now = await self.clock.now()
        queued = 0
        for member, seen in page:
            queued += await self._look(member, seen, now)
        if queued:
            self.notify()
        return queued

    async def _look(self, member: str, seen: str, now: datetime) -> int:
        tenant, meter = touched_parts(member)
        state = await self.store.document(tenant)
        # The tenant's own catalog version says what its plan charges and limits (R10.5).
        plan = None if state is None \
            else self.catalogs.of(state, now).by_id.plans.get(state.plan)
        charge = None if plan is None else charge_on(plan, meter)
        if state is None or charge is None or not charge.thresholds \
                or state.status == "ended" or not (days := period_days(state, now)):
            await self.store.settle_touch(member, seen)
            return 0
        period = current_period(state, local_date(now, zone_of(state)))
        markers = self.store.keys.thresholds(tenant, meter, period.start)
        values: list[Any] = await self.store.run([*meter_reads(tenant, meter, days),
                                                   ("HKEYS", markers)])
        used = meter_used(values[:2])
        marked = {text(m) for m in values[2]}
        events = [threshold_event(state, charge, t, used, period, now)
                  for t in reached(charge, used) if decimal_text(t.fraction) not in marked]
        return await self.store.mark_thresholds(markers, member, seen, events, MARK_TTL_S)

    async def _run(self) -> None:
        while True:
            try:
                await self.look_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # valkey away: the touches wait for the next round
                log.warning("threshold watch failed; retrying", exc_info=True)
                self._cursor = 0
            if self._cursor == 0:  # a whole scan done (or given up): wait for the next
                await asyncio.sleep(self.poll_s)
