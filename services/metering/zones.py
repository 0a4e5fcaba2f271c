"""Tenants' time zones as metering needs them: e-mails and support minutes are counted per
local day of the tenant (R7.2, R8.1)."""

from __future__ import annotations

import logging
import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.asyncio import Redis

from shared.keys import TENANT_ZONES
from shared.redis import text

log = logging.getLogger(__name__)


class TenantZones:
    """Tenants' IANA zones (written by entitlements), cached briefly; UTC when unknown."""

    def __init__(self, redis: Redis, ttl_s: float = 30.0) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, ZoneInfo]] = {}

    async def zones(self, tenants: set[str]) -> dict[str, ZoneInfo]:
        now = time.monotonic()
        missing = [t for t in tenants if t not in self._cache or self._cache[t][0] < now]
        if missing:
            names = await self._redis.hmget(TENANT_ZONES, missing)
            for tenant, name in zip(missing, names, strict=True):
                zone = _zone(text(name)) if name else UTC_ZONE
                self._cache[tenant] = (now + self._ttl_s, zone)
        return {t: self._cache[t][1] for t in tenants}


UTC_ZONE = ZoneInfo("UTC")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("tenant zone %r is not an IANA zone; filing under UTC", name)
        return UTC_ZONE
