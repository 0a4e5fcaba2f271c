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

Owned by the shared library: `apikey:hash:*`, `apikey:id:*` (`shared.auth`), `clock:now`
(`shared.clock`, the manual clock every service reads).

Owned by the console (`services.console.sessions`):

- `console:session:{sha256}`  hash: the signed-in key's id and the session's CSRF token,
                              under the SHA-256 of the cookie's token; expires on its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Final

TENANT_ZONES: Final = "tenant-zones"
LIVE_INCARNATION: Final = "live-incarnation"


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


@dataclass(frozen=True, slots=True)
class EntitlementsKeys:
    prefix: str = "ent"

    def tenant(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}:outbox"

    @property
    def outbox_lease(self) -> str:
        return f"{self.prefix}:outbox:lock"

    @property
    def outbox_published(self) -> str:
        return f"{self.prefix}:outbox:published"

    @property
    def due(self) -> str:
        return f"{self.prefix}:due"

    def history(self, tenant: str) -> str:
        return f"{self.prefix}:history:{tenant}"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idem:{tenant}:{_digest(key)}"

    @property
    def no_idempotency(self) -> str:
        return f"{self.prefix}:idem:none"

    def commit_call(self, call: str) -> str:
        return f"{self.prefix}:commit-call:{call}"

    @property
    def meter_touched(self) -> str:
        """Written by metering, read by the threshold watcher (R10.4)."""
        return f"{self.prefix}:meter-touched"

    def thresholds(self, tenant: str, meter: str, period_start: date) -> str:
        return f"{self.prefix}:thresholds:{tenant}:{meter}:{period_start.isoformat()}"


@dataclass(frozen=True, slots=True)
class InvoicingKeys:
    prefix: str = "inv"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}:outbox"

    @property
    def outbox_lease(self) -> str:
        return f"{self.prefix}:outbox:lock"

    @property
    def outbox_published(self) -> str:
        return f"{self.prefix}:outbox:published"

    @property
    def credited(self) -> str:
        return f"{self.prefix}:credited"

    @property
    def declined(self) -> str:
        """Hash: purchase event id → a declined renewal awaiting that invoice (R8.6)."""
        return f"{self.prefix}:declined"

    @property
    def next(self) -> str:
        return f"{self.prefix}:next"

    @property
    def known(self) -> str:
        return f"{self.prefix}:known"

    @property
    def ended(self) -> str:
        return f"{self.prefix}:ended"

    @property
    def sweep(self) -> str:
        return f"{self.prefix}:sweep"

    def sequence_prefix(self, kind: str) -> str:
        """Followed by a year: the counter of that year's numbers of `kind` (INV, CN)."""
        return f"{self.prefix}:seq:{kind}:"

    def last_issued(self, kind: str) -> str:
        return f"{self.prefix}:last:{kind}"

    def billed(self, tenant: str) -> str:
        return f"{self.prefix}:billed:{tenant}"

    def issue_call(self, call: str) -> str:
        return f"{self.prefix}:issue-call:{call}"

    def credit_call(self, invoice: str, idempotency_key: str) -> str:
        return f"{self.prefix}:credit-call:{_digest(invoice + chr(0) + idempotency_key)}"


@dataclass(frozen=True, slots=True)
class WebhooksKeys:
    prefix: str = "wh"

    @property
    def endpoints(self) -> str:
        return f"{self.prefix}:endpoints"

    def secret(self, endpoint: str) -> str:
        return f"{self.prefix}:secret:{endpoint}"

    def delivery(self, delivery: str) -> str:
        return f"{self.prefix}:delivery:{delivery}"

    def queue(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}"

    def queues(self, endpoint: str) -> str:
        return f"{self.prefix}:queues:{endpoint}"

    @property
    def due(self) -> str:
        return f"{self.prefix}:due"

    def log(self, endpoint: str) -> str:
        return f"{self.prefix}:log:{endpoint}"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def backlog(self) -> str:
        return f"{self.prefix}:backlog"

    def lease(self, queue: str) -> str:
        return f"{self.prefix}:lease:{queue}"
