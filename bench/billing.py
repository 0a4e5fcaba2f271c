"""Billing-run benchmark: 10,000 tenants × 4 modules with 5,000,000
usage events in the period, billed in one run; or (`--scenario late`) the same run when every
tenant has late usage to correct in 36 billed periods (R9.4).

    python bench/billing.py [--tenants 10000] [--events 5000000]
    python bench/billing.py --scenario late [--tenants 1000] [--repeat 3] [--profile]
    python bench/billing.py --scenario usage [--tenants 10000] [--repeat 3]

`--scenario usage`: the run below billed from the same state, by the demo catalog without
usage charges and with two per tenant (R10.1: api_calls graduated, sms_sent by packages; each
tenant sent both meters' events), R times each after an untimed warm-up of each, in turns
(each kind first every other time), every run on invoicing keys and invoice tables of its
own; `billing_run_usage_ratio` = median with / median without, beside its ceiling
`billing_run_usage_ratio_ceiling` (1.3); the same of this process's CPU time,
`billing_run_usage_cpu_ratio`.

On a fresh valkey and chDB (under a temporary directory):
1. **load** (timed apart): tenant documents in the shape entitlements stores (professional
   plan: sales, crm, accounting, emailing; an e-mail pack and a seat pack each) are written
   to Redis; the events go straight into `usage_events` in columnar inserts (per tenant:
   12 access grants on 3 modules, the rest `email.sent`, all in January 2026).
2. **run**: the invoicing service bills 2026-02-01 for every tenant (arrears of January:
   extra users R6.4 and e-mail overage R7.2; in advance: plan and packs), numbering each
   invoice in Redis and writing invoices and lines to ClickHouse.

`--scenario late` (1,000 tenants unless told): the tenants started on 2023-01-01, so 36
monthly periods (January 2023 .. December 2025) are billed before the run of 2026-02-01.
Their state is written directly, as above: the billed marks with the usage cutoff of the last
invoice, and for each past period the invoice lines it was billed (plan, packs, and 2 extra
users on each of sales, crm and accounting: 12 users granted on 2023-01-01, 2 business seats).
Twice as many alike tenants are loaded: half are billed with no late usage
(`billing_run_seconds`); the other half each have one access grant dated 2023-01-15 (crm, a
user who is not the admin) stored after the cutoff (`billing_run_late_seconds`): each of
their invoices corrects the 36 periods by 15.00 (checked after each late run: the lines
counted one per period, the distinct periods and the sum). A third kind of run bills the late
half handed the lines an untimed first late run computed, the late computation skipped
(`billing_run_late_lines_given_seconds`, and its ratio to the baseline): what writing them
costs alone. After an untimed warm-up of each, the kinds take turns R times (each first in
turn), every run on invoicing keys and invoice tables of its own, so a drift of the machine
weighs on all alike. Figures are medians; `billing_run_late_ratio` = late / baseline beside
its ceiling (`billing_run_late_ratio_ceiling`, 1.5), and `billing_run_late_cpu_ratio` the
same of this process's CPU time. Once the bench's own state is built, the collector is tuned
and that state frozen as a platform process does at start (`shared.app.tune_gc`), so the
runs pay for garbage collection what the service would.
Figures are JSON lines `{"metric", "value", "unit"}`; peak RSS is this process's VmHWM.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from services.invoicing.compose import EXTRA_USERS_METER
from services.invoicing.late import LateLines, LateWork
from services.invoicing.service import InvoicingService
from services.invoicing.state import InvoiceState
from services.invoicing.store import InvoiceStore
from shared.app import tune_gc
from shared.catalog import Catalog, load_catalog
from shared.catalog_versions import CatalogVersions
from shared.clickhouse.client import connect
from shared.clickhouse.migrate import migrate
from shared.keys import TENANT_ZONES, EntitlementsKeys, InvoicingKeys
from shared.meters import MeterRegistry
from shared.settings import InvoicingSettings
from shared.stack import ValkeyServer, free_port
from shared.times import as_utc, micros

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2025, 12, 31, 23, tzinfo=UTC)  # 2026-01-01 00:00 in Europe/Paris
RUN_AT = datetime(2026, 2, 1, 12, tzinfo=UTC)
COLUMNS = ("tenant", "type", "time", "source", "id", "module", "user_id", "data",
           "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at")
LINE_COLUMNS = ("number", "tenant", "issued_at", "line_no", "module", "kind", "description",
                "quantity", "unit_price", "amount", "period_from", "period_to", "meter",
                "source")
MODULES = ("sales", "crm", "accounting")
# --scenario late: the billing dates from the anchor to the last one billed (2026-01-01).
HISTORY = [date(2023 + k // 12, k % 12 + 1, 1) for k in range(37)]
LATE_PERIODS = len(HISTORY) - 1
LATE_GRANT_AT = datetime(2023, 1, 15, 10, tzinfo=UTC)
# The target: the run correcting 36 periods a tenant within 1.5 x the run without.
LATE_RATIO_CEILING = 1.5
EXTRA_USER_PRICE = Decimal("15.00")  # crm, monthly (deploy/catalog/2026-11.yaml)


class FixedClock:
    manual = True

    async def now(self) -> datetime:
        return RUN_AT


def emit(metric: str, value: float, unit: str) -> None:
    print(orjson.dumps({"metric": metric, "value": round(value, 3), "unit": unit}).decode(),
          flush=True)


def tenant_doc(name: str, anchor: date = date(2026, 1, 1)) -> dict[str, Any]:
    bought = f"{anchor.isoformat()}T00:00:00+01:00"
    return {"id": name, "plan": "professional", "cycle": "P1M", "anchor": anchor.isoformat(),
            "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
            "admin_user": "u-admin", "renewal": True, "status": "active",
            "created_at": bought, "version": 1,
            "lots": [{"id": f"{name}-e", "item": "emails-1000", "kind": "emails",
                      "quantity": 2, "units": 1000, "state": "active", "bought_at": bought},
                     {"id": f"{name}-s", "item": "seats-business", "kind": "seats",
                      "quantity": 2, "units": 1, "state": "active", "bought_at": bought}]}


async def load(redis: Redis, ch: Any, tenants: int, events: int,
               anchor: date = date(2026, 1, 1)) -> list[str]:
    """Tenant documents (from `anchor`) and the January 2026 events; the billed marks of
    2026-01-01 when the tenants start then (the late scenario writes its own)."""
    names = [f"bench-{i:05d}" for i in range(tenants)]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hset(EntitlementsKeys().tenant(name),
                  mapping={"doc": orjson.dumps(tenant_doc(name, anchor)), "ver": 1})
        pipe.hset(TENANT_ZONES, name, "Europe/Paris")
        if anchor == HISTORY[-1]:
            pipe.hset(InvoicingKeys().billed(name),
                      mapping={"2026-01-01": "", "last": "2026-01-01"})
    await pipe.execute()
    per_tenant = events // tenants
    span_us = int(timedelta(days=31).total_seconds() * 1_000_000) - 1
    start_us = (START - EPOCH) // timedelta(microseconds=1)
    rows = EventRows(ch)
    for t, name in enumerate(names):
        for k in range(per_tenant):
            when = start_us + (k * 7919 + t * 104729) % span_us
            if k < 12:
                rows.grant(name, when, f"{t}-{k}", MODULES[k % 3], f"u{k // 3}")
            else:
                rows.add(name, "email.sent", when, f"{t}-{k}", "", "", '{"count":1}')
        if rows.size >= 1_000_000:
            await rows.flush()
    await rows.flush()
    return names


class EventRows:
    """`usage_events` rows in columns, inserted a chunk at a time."""

    def __init__(self, ch: Any) -> None:
        self.ch = ch
        self.rows: list[list[Any]] = [[] for _ in COLUMNS]
        self.offset = 0

    @property
    def size(self) -> int:
        return len(self.rows[0])

    def add(self, tenant: str, kind: str, when_us: int, event_id: str, module: str,
            user: str, data: str) -> None:
        for column, value in zip(self.rows, (tenant, kind, when_us, "bench", event_id, module,
                                             user, data, "usage-events", 0, self.offset,
                                             when_us // 1000), strict=True):
            column.append(value)
        self.offset += 1

    def grant(self, tenant: str, when_us: int, event_id: str, module: str, user: str) -> None:
        self.add(tenant, "user.access.granted", when_us, event_id, module, user,
                 f'{{"user_id":"{user}","module":"{module}"}}')

    async def flush(self) -> None:
        if self.rows[0]:
            await self.ch.insert_columns("usage_events", COLUMNS, self.rows)
        self.rows = [[] for _ in COLUMNS]


# --- the late scenario (R9.4) ----------------------------------------------------------------

async def load_history(ch: Any, names: Sequence[str]) -> int:
    """The on-time grants of 2023-01-01 (u0..u3 on sales, crm and accounting); returns the
    usage cutoff (µs, ClickHouse time) of the invoice of 2026-01-01: everything so far."""
    rows = EventRows(ch)
    when = micros(datetime(2023, 1, 1, 9, tzinfo=UTC))
    for t, name in enumerate(names):
        for k in range(12):
            rows.grant(name, when, f"h{t}-{k}", MODULES[k % 3], f"u{k // 3}")
    await rows.flush()
    (now,), = await ch.rows("SELECT now64(6)")
    return micros(as_utc(now))


async def store_late_grants(ch: Any, names: Sequence[str]) -> None:
    """One grant per tenant dated in the first billed period, stored after the cutoff."""
    rows = EventRows(ch)
    for t, name in enumerate(names):
        rows.grant(name, micros(LATE_GRANT_AT), f"late-{t}", "crm", "u-late")
    await rows.flush()


def history_lines(names: Sequence[str]) -> list[list[Any]]:
    """The lines each past billing date invoiced: the arrears of the period it ended (2 extra
    users a module: 4 users − 2 business seats) and the fees of the one it started."""
    paris = ZoneInfo("Europe/Paris")
    fees = [(None, "plan", Decimal(1), Decimal("99.00")),
            ("emailing", "pack", Decimal(2), Decimal("5.00")),
            (None, "pack", Decimal(2), Decimal("25.00"))]
    dates = [*HISTORY, date(2026, 2, 1)]
    cols: list[list[Any]] = [[] for _ in LINE_COLUMNS]
    for t, name in enumerate(names):
        for k in range(LATE_PERIODS):
            start, end, following = dates[k], dates[k + 1], dates[k + 2]
            issued = datetime(end.year, end.month, end.day, tzinfo=paris).astimezone(UTC)
            items: list[tuple[str | None, str, Decimal, Decimal, date, date, str]] = [
                (m, "extra_users", Decimal(2), Decimal("20.00" if m == "accounting"
                                                       else "15.00"),
                 start, end, EXTRA_USERS_METER) for m in MODULES]
            items += [(m, kind, q, p, end, following, "") for m, kind, q, p in fees]
            for n, (module, kind, qty, price, a, b, meter) in enumerate(items):
                for col, value in zip(cols, (
                        f"H-{t:05d}-{k:02d}", name, issued, n, module, kind, kind, qty, price,
                        qty * price, a, b, meter, orjson.dumps({"meter": meter}).decode()),
                        strict=True):
                    col.append(value)
    return cols


async def fresh_service(redis: Redis, ch: Any, catalog: Catalog, names: Sequence[str],
                        cutoff_us: int, lines: list[list[Any]], tag: str) -> InvoicingService:
    """An invoicing service on invoicing keys and invoice tables of its own, holding the
    36 billed periods: every run starts from the same state."""
    keys = InvoicingKeys(prefix=f"inv-{tag}")
    store = InvoiceStore(ch, f"bench_{tag}")
    await store.ensure_database()
    await ch.insert_columns(store.t_lines, LINE_COLUMNS, lines)
    pipe = redis.pipeline(transaction=False)
    for t, name in enumerate(names):
        pipe.hset(keys.billed(name), mapping={
            d.isoformat(): f"H-{t:05d}-{k - 1:02d}" if k else f"H-{t:05d}-first"
            for k, d in enumerate(HISTORY)})
        pipe.hset(keys.billed(name), mapping={"last": HISTORY[-1].isoformat(),
                                              "cutoff": cutoff_us})
    await pipe.execute()
    settings = InvoicingSettings(invoicing_batch_tenants=2_000)
    state = InvoiceState(redis, keys, EntitlementsKeys(), ZoneInfo("UTC"))
    return InvoicingService(state, store, CatalogVersions((catalog,)), FixedClock(), settings)


async def timed_run(service: InvoicingService, names: Sequence[str]) -> float:
    began = time.perf_counter()
    result = await service.bill(names, RUN_AT)
    wall = time.perf_counter() - began
    if len(result.issued) != len(names):
        raise RuntimeError(f"{len(result.issued)} invoices issued for {len(names)} tenants")
    return wall


async def check_adjustments(ch: Any, service: InvoicingService, tenants: int) -> int:
    """Every tenant's invoice corrects each of the 36 periods once, by 15.00."""
    (lines, periods, amount), = await ch.rows(
        "SELECT count(), uniqExact(tenant, period.1), sum(amount) FROM (SELECT tenant, "
        "amount, arrayJoin(if(empty(periods), [(assumeNotNull(period_from), "
        f"assumeNotNull(period_to))], periods)) AS period FROM {service.store.t_lines} "
        "WHERE kind = 'adjustment')")
    expected = tenants * LATE_PERIODS
    if (lines, periods, Decimal(amount)) != (expected, expected, expected * EXTRA_USER_PRICE):
        raise RuntimeError(f"adjustments: {lines} lines, {periods} periods, {amount}; "
                           f"expected {expected} lines of {EXTRA_USER_PRICE}")
    return int(lines)


async def late_scenario(redis: Redis, ch: Any, tenants: int, events: int, repeat: int,
                        profile: bool) -> None:
    began = time.perf_counter()
    names = await load(redis, ch, 2 * tenants, 2 * events, anchor=HISTORY[0])
    cutoff_us = await load_history(ch, names)
    # Alike tenants, billed apart: those without late usage (the baseline) and those given
    # a late grant each, so that the kinds of run can take turns.
    plain, late = names[:tenants], names[tenants:]
    await store_late_grants(ch, late)
    lines = {"base": history_lines(plain), "late": history_lines(late)}
    # The collector tuned as a platform process tunes it at start (shared.app), so that the
    # runs pay for garbage collection what the service pays: the bench's own state (the
    # history's lines above) frozen out of collections as a process's start-up state is.
    tune_gc()
    emit("load_seconds", time.perf_counter() - began, "s")
    emit("usage_events", float(events // tenants * tenants + 12 * tenants), "events")
    emit("billed_periods_per_tenant", float(LATE_PERIODS), "periods")
    catalog = load_catalog(InvoicingSettings().catalog)
    billed = {"base": plain, "late": late}

    async def service(kind: str, tag: str) -> InvoicingService:
        return await fresh_service(redis, ch, catalog, billed[kind], cutoff_us, lines[kind],
                                   tag)

    computed = await late_lines(await service("late", "warm_late"), late)
    await timed_run(await service("base", "warm_base"), plain)
    # Each kind of run R times, in turns (each kind first in turn), and this process's CPU
    # time of each too (chDB's threads included): less moved by other processes.
    walls: dict[str, list[float]] = {"base": [], "late": [], "given": []}
    cpu: dict[str, list[float]] = {"base": [], "late": [], "given": []}
    kinds = list(walls)
    for r in range(repeat):
        for kind in kinds[r % 3:] + kinds[:r % 3]:
            billing = await service("base" if kind == "base" else "late", f"{kind}{r}")
            if kind == "given":
                hand_over(billing, computed)
            began = time.process_time()
            walls[kind].append(await timed_run(billing, billed["base" if kind == "base"
                                                                else "late"]))
            cpu[kind].append(time.process_time() - began)
            if kind == "late":
                adjustments = await check_adjustments(ch, billing, tenants)
    print("runs (s): " + ", ".join(f"{kind} {[round(x, 3) for x in runs]}"
                                   for kind, runs in walls.items()) +
          f"; CPU (s): {({kind: [round(x, 3) for x in runs] for kind, runs in cpu.items()})}",
          file=sys.stderr)
    baseline = statistics.median(walls["base"])
    emit("billing_run_seconds", baseline, "s")
    emit("billing_run_late_seconds", statistics.median(walls["late"]), "s")
    emit("billing_run_late_ratio", statistics.median(walls["late"]) / baseline, "ratio")
    emit("billing_run_late_ratio_ceiling", LATE_RATIO_CEILING, "ratio")
    emit("billing_run_late_cpu_ratio",
         statistics.median(cpu["late"]) / statistics.median(cpu["base"]), "ratio")
    emit("billing_run_late_lines_given_seconds", statistics.median(walls["given"]), "s")
    emit("billing_run_late_lines_given_ratio", statistics.median(walls["given"]) / baseline,
         "ratio")
    emit("late_adjustment_lines", float(adjustments), "lines")
    emit("peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB")
    if profile:
        await profile_run(lambda tag: service("late", tag), late)


async def late_lines(billing: InvoicingService, names: Sequence[str]
                     ) -> dict[str, LateLines]:
    """An untimed late run, keeping the adjustment lines it computed."""
    computed: dict[str, LateLines] = {}
    compute = billing.drafts.late.adjustments

    async def keep(work: Sequence[LateWork], intervals: Any = None) -> dict[str, LateLines]:
        found = await compute(work, intervals)
        computed.update(found)
        return found

    billing.drafts.late.adjustments = keep  # type: ignore[method-assign]
    await timed_run(billing, names)
    return computed


def hand_over(billing: InvoicingService, computed: dict[str, LateLines]) -> None:
    """The late computation skipped: `billing` is handed the lines `computed`."""
    async def handed(work: Sequence[LateWork], intervals: Any = None
                     ) -> dict[str, LateLines]:
        return {w.view.id: computed[w.view.id] for w in work if w.view.id in computed}

    billing.drafts.late.adjustments = handed  # type: ignore[method-assign]


async def profile_run(fresh: Callable[[str], Any], names: Sequence[str]) -> None:
    """Two more late runs, printed to stderr: one with the wall time of every store read and
    of the late-usage step (no profiler), one under cProfile (the event loop's thread)."""
    service = await fresh("walls")
    walls: dict[str, float] = {}
    targets: list[tuple[object, str]] = [(service.store, name) for name in (
        "now", "emails", "access", "support_sessions", "late_events",
        "billed_quantities_since", "insert_documents")]
    targets += [(service.drafts, "compose"), (service.drafts.late, "adjustments"),
                (service.state, "issue")]
    for owner, attr in targets:
        setattr(owner, attr, _wall(walls, f"{type(owner).__name__}.{attr}",
                                   getattr(owner, attr)))
    wall = await timed_run(service, names)
    print(f"late run: {wall:.3f} s wall, of which", file=sys.stderr)
    for name, seconds in sorted(walls.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds:8.3f} s  {name}", file=sys.stderr)
    service = await fresh("profile")
    profiler = cProfile.Profile()
    profiler.enable()
    wall = await timed_run(service, names)
    profiler.disable()
    print(f"late run under cProfile: {wall:.3f} s wall", file=sys.stderr)
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("cumulative").print_stats(r"services|shared", 30)
    stats.sort_stats("tottime").print_stats(20)


def _wall(walls: dict[str, float], name: str, call: Callable[..., Any]) -> Callable[..., Any]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            walls[name] = walls.get(name, 0.0) + time.perf_counter() - began
    return timed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=("run", "late", "usage"), default="run")
    parser.add_argument("--tenants", type=int, default=None,
                        help="10,000 (run) or 1,000 (late)")
    parser.add_argument("--events", type=int, default=None,
                        help="January 2026 usage events in all: 500 per tenant by default")
    parser.add_argument("--repeat", type=int, default=3,
                        help="late, usage: timed runs of each kind")
    parser.add_argument("--profile", action="store_true",
                        help="late: profile one more late run (stderr)")
    args = parser.parse_args()
    tenants = args.tenants or (1_000 if args.scenario == "late" else 10_000)
    events = args.events or 500 * tenants
    with tempfile.TemporaryDirectory(prefix="bench-billing-") as tmp:
        root = Path(tmp)
        valkey = ValkeyServer(free_port(), root / "valkey", root / "valkey.log")
        valkey.start()
        try:
            redis = Redis.from_url(valkey.url, decode_responses=True)
            ch = connect(f"chdb://{root / 'clickhouse'}")
            await migrate(ch)
            if args.scenario == "late":
                await late_scenario(redis, ch, tenants, events, args.repeat, args.profile)
            elif args.scenario == "usage":
                await usage_scenario(redis, ch, tenants, events, root, args.repeat)
            else:
                await one_run(redis, ch, tenants, events)
            await redis.aclose()
        finally:
            valkey.stop()


async def one_run(redis: Redis, ch: Any, tenants: int, events: int) -> None:
    began = time.perf_counter()
    names = await load(redis, ch, tenants, events)
    emit("load_seconds", time.perf_counter() - began, "s")
    emit("usage_events", float(events // tenants * tenants), "events")
    settings = InvoicingSettings(invoicing_batch_tenants=2_000)
    state = InvoiceState(redis, InvoicingKeys(), EntitlementsKeys(), ZoneInfo("UTC"))
    service = InvoicingService(state, InvoiceStore(ch),
                               CatalogVersions((load_catalog(settings.catalog),)),
                               FixedClock(), settings)
    began = time.perf_counter()
    result = await service.bill(names, RUN_AT)
    wall = time.perf_counter() - began
    emit("billing_run_seconds", wall, "s")
    emit("invoices_issued", float(len(result.issued)), "invoices")
    emit("invoices_per_second", len(result.issued) / wall, "invoices/s")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit("peak_rss", peak_kb / 1024, "MiB")
    sample = await service.store.invoice(result.issued[0])
    assert sample is not None
    emit("sample_invoice_total", float(sample["total"]), "EUR")


# --- two usage charges per tenant (R10.1) ------------------------------------------------

USAGE_METERS = ("meters:\n"
                "  - {slug: api_calls, event_type: api.calls, aggregation: SUM, "
                "value_property: count}\n"
                "  - {slug: sms_sent, event_type: sms.sent, aggregation: SUM, "
                "value_property: count}\n")
SMS_CHARGE = {"meter": "sms_sent", "model": "package", "package_size": "100",
              "package_price": "5.00"}
# The target: the run with two usage charges a tenant within 1.3 x the run without.
USAGE_RATIO_CEILING = 1.3


async def usage_scenario(redis: Redis, ch: Any, tenants: int, events: int, root: Path,
                         repeat: int) -> None:
    """The run of `one_run`, billed `repeat` times by the demo catalog stripped of usage
    charges and as many with two per tenant (api_calls graduated, the demo's, and sms_sent
    by packages), alternating, each tenant having sent both meters' events."""
    names = await load(redis, ch, tenants, events)
    # The collector tuned as a platform process tunes it at start (shared.app), so that the
    # runs pay for garbage collection what the service pays.
    tune_gc()
    rows = EventRows(ch)
    for t, name in enumerate(names):
        when = micros(START) + t
        rows.add(name, "api.calls", when, f"api-{t}", "", "", '{"count":25000}')
        rows.add(name, "sms.sent", when, f"sms-{t}", "", "", '{"count":250}')
    await rows.flush()
    raw = orjson.loads(orjson.dumps(load_catalog(InvoicingSettings().catalog).to_public()))
    professional = next(p for p in raw["plans"] if p["id"] == "professional")
    charges: dict[str, list[Any]] = {"plain": [], "usage": [*professional["usage"], SMS_CHARGE]}
    (root / "meters.yaml").write_text(USAGE_METERS)
    meters = MeterRegistry.load(root / "meters.yaml")
    walls: dict[str, list[float]] = {"plain": [], "usage": []}
    cpu: dict[str, list[float]] = {"plain": [], "usage": []}
    for r in range(-1, repeat):  # run -1: an untimed warm-up of each kind
        # Each kind goes first every other time, so a machine growing busier or quieter
        # during the runs weighs on both alike.
        for tag, priced in sorted(charges.items(), reverse=r % 2 == 1):
            professional["usage"] = priced
            catalogs = CatalogVersions((Catalog.model_validate(raw),))
            service = await usage_service(redis, ch, names, f"{tag}{r + 1}", catalogs, meters)
            began = time.process_time()
            wall = await timed_run(service, names)
            if r >= 0:
                walls[tag].append(wall)
                cpu[tag].append(time.process_time() - began)
    print(f"runs (s): {walls}; CPU (s): {cpu}", file=sys.stderr)
    plain, usage = statistics.median(walls["plain"]), statistics.median(walls["usage"])
    emit("billing_run_plain_seconds", plain, "s")
    emit("billing_run_usage_seconds", usage, "s")
    emit("billing_run_usage_ratio", usage / plain, "x")
    emit("billing_run_usage_ratio_ceiling", USAGE_RATIO_CEILING, "x")
    # CPU time of this process (chDB's threads included): less moved by other processes
    # sharing the cores than wall time is.
    plain_cpu, usage_cpu = statistics.median(cpu["plain"]), statistics.median(cpu["usage"])
    emit("billing_run_plain_cpu_seconds", plain_cpu, "s")
    emit("billing_run_usage_cpu_seconds", usage_cpu, "s")
    emit("billing_run_usage_cpu_ratio", usage_cpu / plain_cpu, "x")


async def usage_service(redis: Redis, ch: Any, names: Sequence[str], tag: str,
                        catalogs: CatalogVersions, meters: MeterRegistry) -> InvoicingService:
    """An invoicing service on keys and tables of its own, 2026-01-01 billed already."""
    keys = InvoicingKeys(prefix=f"inv-{tag}")
    store = InvoiceStore(ch, f"bench_{tag}")
    await store.ensure_database()
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hset(keys.billed(name), mapping={"2026-01-01": "", "last": "2026-01-01"})
    await pipe.execute()
    state = InvoiceState(redis, keys, EntitlementsKeys(), ZoneInfo("UTC"))
    return InvoicingService(state, store, catalogs, FixedClock(),
                            InvoicingSettings(invoicing_batch_tenants=2_000), meters=meters)


if __name__ == "__main__":
    asyncio.run(main())
