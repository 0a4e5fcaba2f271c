"""Billing-run benchmark: 10,000 tenants × 4 modules with 5,000,000
usage events in the period, billed in one run.

    python bench/billing.py [--tenants 10000] [--events 5000000]

On a fresh valkey and chDB (under a temporary directory):
1. **load** (timed apart): tenant documents in the shape entitlements stores (professional
   plan: sales, crm, accounting, emailing; an e-mail pack and a seat pack each) are written
   to Redis; the events go straight into `usage_events` in columnar inserts (per tenant:
   12 access grants on 3 modules, the rest `email.sent`, all in January 2026).
2. **run**: the invoicing service bills 2026-02-01 for every tenant (arrears of January:
   extra users R6.4 and e-mail overage R7.2; in advance: plan and packs), numbering each
   invoice in Redis and writing invoices and lines to ClickHouse.
Figures are JSON lines `{"metric", "value", "unit"}`; peak RSS is this process's VmHWM.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from services.invoicing.service import InvoicingService
from services.invoicing.state import InvoiceState
from services.invoicing.store import InvoiceStore
from shared.catalog import load_catalog
from shared.clickhouse.client import connect
from shared.clickhouse.migrate import migrate
from shared.keys import TENANT_ZONES, EntitlementsKeys, InvoicingKeys
from shared.settings import InvoicingSettings
from shared.stack import ValkeyServer, free_port

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2025, 12, 31, 23, tzinfo=UTC)  # 2026-01-01 00:00 in Europe/Paris
RUN_AT = datetime(2026, 2, 1, 12, tzinfo=UTC)
COLUMNS = ("tenant", "type", "time", "source", "id", "module", "user_id", "data",
           "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at")


class FixedClock:
    manual = True

    async def now(self) -> datetime:
        return RUN_AT


def emit(metric: str, value: float, unit: str) -> None:
    print(orjson.dumps({"metric": metric, "value": round(value, 3), "unit": unit}).decode(),
          flush=True)


def tenant_doc(name: str) -> dict[str, Any]:
    bought = "2026-01-01T00:00:00+01:00"
    return {"id": name, "plan": "professional", "cycle": "P1M", "anchor": "2026-01-01",
            "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
            "admin_user": "u-admin", "renewal": True, "status": "active",
            "created_at": bought, "version": 1,
            "lots": [{"id": f"{name}-e", "item": "emails-1000", "kind": "emails",
                      "quantity": 2, "units": 1000, "state": "active", "bought_at": bought},
                     {"id": f"{name}-s", "item": "seats-business", "kind": "seats",
                      "quantity": 2, "units": 1, "state": "active", "bought_at": bought}]}


async def load(redis: Redis, ch: Any, tenants: int, events: int) -> list[str]:
    names = [f"bench-{i:05d}" for i in range(tenants)]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hset(EntitlementsKeys().tenant(name), mapping={"doc": orjson.dumps(tenant_doc(name)),
                                                 "ver": 1})
        pipe.hset(TENANT_ZONES, name, "Europe/Paris")
        pipe.hset(InvoicingKeys().billed(name), mapping={"2026-01-01": "", "last": "2026-01-01"})
    await pipe.execute()
    per_tenant = events // tenants
    span_us = int(timedelta(days=31).total_seconds() * 1_000_000) - 1
    start_us = (START - EPOCH) // timedelta(microseconds=1)
    chunk = 1_000_000
    rows: list[list[Any]] = [[] for _ in COLUMNS]
    offset = 0

    async def flush() -> None:
        nonlocal rows
        if rows[0]:
            await ch.insert_columns("usage_events", COLUMNS, rows)
        rows = [[] for _ in COLUMNS]

    modules = ("sales", "crm", "accounting")
    for t, name in enumerate(names):
        for k in range(per_tenant):
            when = start_us + (k * 7919 + t * 104729) % span_us
            if k < 12:
                module, user = modules[k % 3], f"u{k // 3}"
                kind, data = "user.access.granted", f'{{"user_id":"{user}","module":"{module}"}}'
            else:
                module, user, kind, data = "", "", "email.sent", '{"count":1}'
            for column, value in zip(rows, (name, kind, when, "bench", f"{t}-{k}", module,
                                            user, data, "usage-events", 0, offset,
                                            when // 1000), strict=True):
                column.append(value)
            offset += 1
        if len(rows[0]) >= chunk:
            await flush()
    await flush()
    return names


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-billing-") as tmp:
        root = Path(tmp)
        valkey = ValkeyServer(free_port(), root / "valkey", root / "valkey.log")
        valkey.start()
        try:
            redis = Redis.from_url(valkey.url, decode_responses=True)
            ch = connect(f"chdb://{root / 'clickhouse'}")
            await migrate(ch)
            began = time.perf_counter()
            names = await load(redis, ch, args.tenants, args.events)
            emit("load_seconds", time.perf_counter() - began, "s")
            emit("usage_events", float(args.events // args.tenants * args.tenants), "events")
            settings = InvoicingSettings(invoicing_batch_tenants=2_000)
            state = InvoiceState(redis, InvoicingKeys(), EntitlementsKeys(), ZoneInfo("UTC"))
            service = InvoicingService(state, InvoiceStore(ch), load_catalog(settings.catalog),
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
            await redis.aclose()
        finally:
            valkey.stop()


if __name__ == "__main__":
    asyncio.run(main())
