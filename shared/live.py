"""The Redis layout of the live counters: written by metering, read by the entitlement checks.

- `live:{tenant}:emails:{YYYY-MM-DD}`   e-mails sent that local day of the tenant (R7.2)
- `live:{tenant}:support_minutes:{YYYY-MM-DD}`     support minutes of levels 1-2 that local
- `live:{tenant}:support_minutes_l3:{YYYY-MM-DD}`  day, and of level 3, each session rounded
                                        up to 15 minutes (R8.1, R8.3: level 3 never draws
                                        on the daily allowance, so it is kept apart)
- `live:{tenant}:companies`             companies attached now (R7.3)
- `live:{tenant}:users:{module}`        sorted set: users with access now, scored by the
                                        grant instant in µs (R6.3 ranks by it, ties by id)
- `live:{tenant}:access:{module}`       hash: user -> order of the last grant/revoke applied
- `tenant-zones`                        hash: tenant -> IANA zone, written by entitlements, so
                                        metering files e-mails under the tenant's local day
- `live-incarnation`                    the broker incarnation the counters were last rebuilt
                                        for from ClickHouse
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

TENANT_ZONES_KEY = "tenant-zones"
# The broker incarnation the live counters were last rebuilt for (services/metering/rebuild).
LIVE_INCARNATION_KEY = "live-incarnation"


def live_key(tenant: str, *parts: str) -> str:
    return ":".join(("live", tenant, *parts))


@lru_cache(maxsize=65_536)
def emails_key(tenant: str, day: date) -> str:
    return live_key(tenant, "emails", day.isoformat())


def support_minutes_key(tenant: str, day: date, level_3: bool = False) -> str:
    return live_key(tenant, "support_minutes_l3" if level_3 else "support_minutes",
                    day.isoformat())


def companies_key(tenant: str) -> str:
    return live_key(tenant, "companies")


def users_key(tenant: str, module: str) -> str:
    return live_key(tenant, "users", module)


def access_key(tenant: str, module: str) -> str:
    return live_key(tenant, "access", module)
