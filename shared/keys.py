"""The Redis layout: every key a service writes, declared once, with its owner and readers.

A key one service writes and another reads is part of the contract between them, like the
tenant document (`shared.subscription`). It is named here and nowhere else, so a reader and
its writer cannot drift apart, and an operator sees the whole layout in one page.

Owned by metering (the live counters, written by the same call that stores an event):

- `live:{tenant}:emails:{YYYY-MM-DD}`   e-mails sent that local day of the tenant (R7.2)
- `live:{tenant}:support_minutes:{YYYY-MM-DD}`     support minutes of levels 1-2 that local
- `live:{tenant}:support_minutes_l3:{YYYY-MM-DD}`  day, and of level 3, each session rounded
                                        up to 15 minutes (R8.1, R8.3: level 3 never draws
                                        on the daily allowance, so it is kept apart)
- `live:{tenant}:companies`             companies attached now (R7.3)
- `live:{tenant}:meter:{meter}:{YYYY-MM-DD}`        a priced COUNT or SUM meter that local
- `live:{tenant}:meter_nanos:{meter}:{YYYY-MM-DD}`  day: whole units, and billionths of a
                                        unit (R10.4; shared.usage_limits)
- `live:{tenant}:resource:{resource}`   set: the ids of a counted resource's instances now
                                        (R7.4, resources the catalog declares); SCARD is
                                        the count
- `live:{tenant}:users:{module}`        sorted set: users with access now, scored by the
                                        grant instant in µs (R6.3 ranks by it, ties by id)
- `live:{tenant}:access:{module}`       hash: user -> order of the last grant/revoke applied
- `live-incarnation`                    the broker incarnation the counters were last rebuilt
                                        for from ClickHouse
  Read by: the entitlement checks; `users` also by a purchase of a pack priced per
  licence, which counts the account's licences from it (R4.12).
- `{p}:meter-touched` (p: the entitlements prefix) hash: tenant + meter -> a counter bumped
  with every event on a priced meter. Read, and cleared once looked at, by entitlements'
  threshold watcher (R10.4).

Owned by entitlements (`EntitlementsKeys`, prefix `ENTITLEMENTS_KEY_PREFIX`):

- `{p}:tenant:{tenant}`   hash: `doc` (the tenant document), `ver` (its version).
                          Read by: invoicing (it bills from it), the check's fast path.
- `{p}:outbox`            stream of subscription events not yet published to Kafka.
                          Read by: invoicing (its length: "has everything been published?").
- `tenant-zones`          hash: tenant -> IANA zone, written with the tenant's creation.
                          Read by: metering (the local day of an e-mail), auth (a key is
                          minted only for a tenant that exists).
- `{p}:thresholds:{tenant}:{meter}:{period start}` hash: threshold -> id of the
                          `usage.threshold_reached` event written for it (R10.4), once.
- private: `{p}:history:{tenant}`, `{p}:idem:{tenant}:{sha256}`, `{p}:due`,
  `{p}:outbox:lock`, `{p}:outbox:published`, `{p}:commit-call:{uuid}`.

Owned by invoicing (`InvoicingKeys`, prefix `INVOICING_KEY_PREFIX`):

- `{p}:events`            hash: event id -> invoice number of a purchase's immediate invoice.
                          Read by: entitlements (the purchase answer names its invoice).
- private: `{p}:outbox` (stream of `invoice.issued` / `credit_note.issued` not yet
  published), `{p}:outbox:lock`, `{p}:outbox:published`, `{p}:pending`, `{p}:credited`,
  `{p}:next`, `{p}:known`, `{p}:seq:{kind}:{year}`,
  `{p}:last:{kind}`, `{p}:ended`, `{p}:sweep`,
  `{p}:billed:{tenant}`, `{p}:issue-call:{uuid}`, `{p}:credit-call:{sha256}`.

Owned by webhooks (`WebhooksKeys`, prefix `WEBHOOKS_KEY_PREFIX`), all private
(`services/webhooks/store.py` says what each holds): `{p}:endpoints`, `{p}:secret:{id}`,
`{p}:delivery:{id}`, `{p}:queue:{endpoint}/{tenant}`, `{p}:queues:{endpoint}`, `{p}:due`,
`{p}:log:{endpoint}`, `{p}:seq`, `{p}:backlog`, `{p}:lease:{endpoint}/{tenant}`.

Owned by the shared library:

- `apikey:hash:{sha256}`  hash: a key's id, role and tenant, under the SHA-256 of its secret;
                          written by the admin routes, read by every service's auth
                          (`shared.auth`) and the check's fast path.
- `apikey:id:{id}`        the SHA-256 of that key's secret, `apikeys` the set of key ids.
- `clock:now`             the manual clock's instant (`shared.clock`): `PUT /v1/clock` sets
                          it, every service reads it.

Owned by the console (`services.console.sessions`):

- `console:session:{sha256}`  hash: the signed-in key's id and the session's CSRF token,
                              under the SHA-256 of the cookie's token; expires on its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Final, Protocol

TENANT_ZONES: Final = "tenant-zones"
LIVE_INCARNATION: Final = "live-incarnation"
LIVE_PATTERN: Final = "live:*"  # every live counter: a rebuild replaces them all
MANUAL_CLOCK: Final = "clock:now"
API_KEY_IDS: Final = "apikeys"


def api_key_by_hash(secret_digest: str) -> str:
    return f"apikey:hash:{secret_digest}"


def api_key_by_id(key_id: str) -> str:
    return f"apikey:id:{key_id}"


def console_session_key(token_digest: str) -> str:
    return f"console:session:{token_digest}"


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


def resource_key(tenant: str, resource: str) -> str:
    """Set of the instance ids of a counted resource (R7.4): written by metering, read by the
    checks (SCARD)."""
    return live_key(tenant, "resource", resource)


def meter_key(tenant: str, meter: str, day: date) -> str:
    """Whole units of a priced meter on a local day of the tenant (R10.4)."""
    return live_key(tenant, "meter", meter, day.isoformat())


def meter_nanos_key(tenant: str, meter: str, day: date) -> str:
    """Billionths of a unit of a priced SUM meter on a local day (R10.4)."""
    return live_key(tenant, "meter_nanos", meter, day.isoformat())


def users_key(tenant: str, module: str) -> str:
    return live_key(tenant, "users", module)


def access_key(tenant: str, module: str) -> str:
    return live_key(tenant, "access", module)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Prefixed(Protocol):
    @property
    def prefix(self) -> str: ...


class Fixed:
    """One key of a service's layout, `{prefix}:{name}`, read as an attribute."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, keys: _Prefixed, owner: type | None = None) -> str:
        return f"{keys.prefix}:{self.name}"


class PerId:
    """A family of keys, one per id (a tenant, an endpoint, a call…): `{prefix}:{name}:{id}`,
    made by calling the attribute with the id."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, keys: _Prefixed, owner: type | None = None) -> Callable[[str], str]:
        head = f"{keys.prefix}:{self.name}:"
        return lambda id_: head + id_


class _WithOutbox:
    """A service's transactional outbox (`shared.outbox.OutboxStream`): the stream of events
    not yet published, the lease of the replica draining it, what was published."""

    __slots__ = ()
    outbox = Fixed("outbox")
    outbox_lease = Fixed("outbox:lock")
    outbox_published = Fixed("outbox:published")


@dataclass(frozen=True, slots=True)
class EntitlementsKeys(_WithOutbox):
    prefix: str = "ent"

    tenant = PerId("tenant")
    due = Fixed("due")
    history = PerId("history")
    no_idempotency = Fixed("idem:none")
    commit_call = PerId("commit-call")
    meter_touched = Fixed("meter-touched")  # written by metering, read by thresholds (R10.4)

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idem:{tenant}:{_digest(key)}"

    def thresholds(self, tenant: str, meter: str, period_start: date) -> str:
        return f"{self.prefix}:thresholds:{tenant}:{meter}:{period_start.isoformat()}"


@dataclass(frozen=True, slots=True)
class InvoicingKeys(_WithOutbox):
    prefix: str = "inv"

    events = Fixed("events")
    pending = Fixed("pending")
    credited = Fixed("credited")
    declined = Fixed("declined")  # hash: purchase event id -> a declined renewal (R8.6)
    next = Fixed("next")
    known = Fixed("known")
    ended = Fixed("ended")
    sweep = Fixed("sweep")
    last_issued = PerId("last")  # of a kind (INV, CN)
    billed = PerId("billed")
    issue_call = PerId("issue-call")

    def sequence_prefix(self, kind: str) -> str:
        """Followed by a year: the counter of that year's numbers of `kind` (INV, CN)."""
        return f"{self.prefix}:seq:{kind}:"

    def credit_call(self, invoice: str, idempotency_key: str) -> str:
        return f"{self.prefix}:credit-call:{_digest(invoice + chr(0) + idempotency_key)}"


@dataclass(frozen=True, slots=True)
class WebhooksKeys:
    prefix: str = "wh"

    endpoints = Fixed("endpoints")
    secret = PerId("secret")
    delivery = PerId("delivery")
    queue = PerId("queue")
    queues = PerId("queues")  # of an endpoint
    due = Fixed("due")
    log = PerId("log")  # of an endpoint
    seq = Fixed("seq")
    backlog = Fixed("backlog")
    lease = PerId("lease")  # of a queue
