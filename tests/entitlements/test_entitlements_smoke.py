from __future__ import annotations

import time
from datetime import UTC, datetime

from ent_support import isolated_app

from shared.stack import Endpoints


async def test_smoke(endpoints: Endpoints) -> None:
    t0 = time.perf_counter()
    async with isolated_app(endpoints, datetime(2026, 3, 1, tzinfo=UTC)) as app:
        t1 = time.perf_counter()
        r = await app.client.get("/v1/clock", headers=app.as_admin())
        print(r.json())
    print("start", t1 - t0, "total", time.perf_counter() - t0)
