"""The live-counter updates one new event makes (services/metering/service.py `live_ops`),
and the claim that makes a second reading of it a copy (`claim_key`).

E-mails and support minutes are filed under the tenant's LOCAL day (R7.2, R8.1), companies
kept as one net count (R7.3), access as last-event-wins state per user (R6.3). Keys come
from shared/keys.py; expected days, amounts and instants are worked out by hand.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.metering.service import claim_key, live_ops, local_day
from shared import events, keys
from shared.events import EventValidator, UsageEvent

pytestmark = pytest.mark.unit

# Loaded at import: a unit test reads no file, and ZoneInfo reuses a referenced instance.
UTC_ZONE = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")  # UTC+1 in winter, UTC+2 from late March to late October
NEW_YORK = ZoneInfo("America/New_York")  # UTC−5 in winter
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # UTC+14, the first to see a new day

VALIDATOR = EventValidator({"api.call": lambda data: None})
TENANT = "acme"
# 2026-01-15T10:00:00Z: 20 454 days from 1970 to 2026 (56 × 365 + 14 leap days, 1972 ...
# 2024), + 14 days into January = 20 468 days × 86 400 s = 1 768 435 200 s, + 10 h
# (36 000 s) = 1 768 471 200 s, in microseconds:
T_MICROS = 1_768_471_200_000_000


def event(event_type: str, data: dict[str, Any], time: str = "2026-01-15T10:00:00Z",
          event_id: str = "e-1", source: str = "crm", tenant: str = TENANT) -> UsageEvent:
    return VALIDATOR.validate({"specversion": "1.0", "id": event_id, "source": source,
                               "type": event_type, "subject": tenant, "time": time,
                               "data": data})


def emails(time: str, count: int = 250) -> UsageEvent:
    return event(events.EMAIL_SENT, {"count": count}, time)


# --- e-mails: the tenant's local day (R7.2) ------------------------------------------------

def test_an_email_at_23_30_utc_on_31_december_counts_on_1_january_in_paris() -> None:
    """23:30Z on 31 Dec 2025 is 00:30 on 1 Jan 2026 in Paris (UTC+1): the e-mails belong
    to January's period of a Paris tenant, not December's."""
    ops = live_ops(emails("2025-12-31T23:30:00Z"), PARIS)
    assert ops == [["incr", keys.emails_key(TENANT, date(2026, 1, 1)), 250]]
    assert ops[0][1] == "live:acme:emails:2026-01-01"


@pytest.mark.parametrize(("time", "zone", "day"), [
    ("2025-12-31T23:30:00Z", UTC_ZONE, date(2025, 12, 31)),  # the same instant in UTC
    ("2025-12-31T22:59:59Z", PARIS, date(2025, 12, 31)),  # 23:59:59 local
    ("2025-12-31T23:00:00Z", PARIS, date(2026, 1, 1)),  # local midnight exactly
    ("2026-01-01T00:30:00+01:00", PARIS, date(2026, 1, 1)),  # = 23:30Z on 31 Dec
    ("2026-01-01T03:00:00Z", NEW_YORK, date(2025, 12, 31)),  # 22:00 local
    ("2025-12-31T10:00:00Z", KIRITIMATI, date(2026, 1, 1)),  # 00:00 local (+14)
    ("2025-12-31T09:59:59Z", KIRITIMATI, date(2025, 12, 31)),  # 23:59:59 local
    ("2026-06-30T22:00:00Z", PARIS, date(2026, 7, 1)),  # summer time, UTC+2: midnight
    ("2026-06-30T21:59:59Z", PARIS, date(2026, 6, 30)),
    ("2024-02-28T23:00:00Z", PARIS, date(2024, 2, 29)),  # leap day, 00:00 local
    ("2024-02-29T23:00:00Z", PARIS, date(2024, 3, 1)),
])
def test_emails_are_filed_under_the_local_day(time: str, zone: ZoneInfo, day: date) -> None:
    assert live_ops(emails(time, 3), zone) == [["incr", keys.emails_key(TENANT, day), 3]]
    assert local_day(emails(time).time, zone) == day


def test_the_count_is_added_as_reported() -> None:
    """docs/events.md bounds a count to [1, 10^9]; both ends go through unchanged."""
    for count in (1, 10**9):
        [[_, _, amount]] = live_ops(emails("2026-01-15T10:00:00Z", count), PARIS)
        assert amount == count


# --- companies: one net count (R7.3) -------------------------------------------------------

def test_a_company_created_adds_one_and_deleted_takes_one_away() -> None:
    """Not per day: the count is of companies attached now, whatever the zone."""
    key = keys.companies_key(TENANT)
    assert key == "live:acme:companies"
    created = event(events.COMPANY_CREATED, {"company_id": "c-1"}, "2025-12-31T23:30:00Z")
    deleted = event(events.COMPANY_DELETED, {"company_id": "c-1"}, "2025-12-31T23:30:00Z")
    for zone in (PARIS, NEW_YORK):
        assert live_ops(created, zone) == [["incr", key, 1]]
        assert live_ops(deleted, zone) == [["incr", key, -1]]


# --- support minutes: rounded up to 15, level 3 apart (R8.1, R8.3) --------------------------

@pytest.mark.parametrize(("minutes", "level", "rounded"), [
    (1, 1, 15),  # any started quarter hour counts
    (15, 2, 15),  # exactly one increment: unchanged
    (16, 1, 30),  # one minute past it: the next one
    (50, 2, 60),  # R8.1's example
    (50, 3, 60),  # level 3: same rounding, another counter
    (10**9, 1, 1_000_000_005),  # 10^9 / 15 = 66 666 666.67 → 66 666 667 × 15
])
def test_support_minutes_are_rounded_up_to_15(minutes: int, level: int, rounded: int) -> None:
    session = event(events.SUPPORT_SESSION_COMPLETED, {"minutes": minutes, "level": level})
    key = keys.support_minutes_key(TENANT, date(2026, 1, 15), level_3=level == 3)
    assert live_ops(session, PARIS) == [["incr", key, rounded]]


def test_level_3_is_kept_apart_from_levels_1_and_2() -> None:
    """R8.3: level-3 work never draws on the daily allowance, so it has its own counter;
    both are filed under the local day (23:30Z on 31 Dec is 1 Jan in Paris)."""
    time = "2025-12-31T23:30:00Z"
    keys_by_level = {
        level: live_ops(event(events.SUPPORT_SESSION_COMPLETED,
                              {"minutes": 20, "level": level}, time), PARIS)[0][1]
        for level in (1, 2, 3)}
    assert keys_by_level == {1: "live:acme:support_minutes:2026-01-01",
                             2: "live:acme:support_minutes:2026-01-01",
                             3: "live:acme:support_minutes_l3:2026-01-01"}


@given(st.integers(1, 10**9), st.sampled_from([1, 2, 3]))
def test_a_rounded_session_is_the_least_multiple_of_15_not_below_it(minutes: int,
                                                                    level: int) -> None:
    session = event(events.SUPPORT_SESSION_COMPLETED, {"minutes": minutes, "level": level})
    [[verb, key, amount]] = live_ops(session, UTC_ZONE)
    assert verb == "incr"
    assert isinstance(amount, int)
    assert amount % 15 == 0
    assert minutes <= amount < minutes + 15
    assert isinstance(key, str)
    assert key.startswith("live:acme:support_minutes_l3:" if level == 3
                          else "live:acme:support_minutes:2")


# --- access: last event wins, ranked by grant time (R6.3) ----------------------------------

def test_a_grant_sets_the_users_state_with_its_instant_in_microseconds() -> None:
    """At 2026-01-15T10:00Z (T µs, see above) the order is 2T for a grant; the instant
    travels as text, since Lua would print a 16-digit number with 14 significant digits."""
    grant = event(events.USER_ACCESS_GRANTED, {"user_id": "u-7", "module": "crm"})
    assert live_ops(grant, PARIS) == [[
        "access", keys.access_key(TENANT, "crm"), keys.users_key(TENANT, "crm"), "u-7",
        "3536942400000000", "1768471200000000", 1]]
    assert str(2 * T_MICROS) == "3536942400000000"
    assert keys.access_key(TENANT, "crm") == "live:acme:access:crm"
    assert keys.users_key(TENANT, "crm") == "live:acme:users:crm"


def test_a_revocation_at_the_same_instant_wins_over_a_grant() -> None:
    """Revoke order = 2T + 1 > grant order 2T; a grant one microsecond later, 2(T + 1) =
    2T + 2, wins over that revocation again."""
    data = {"user_id": "u-7", "module": "crm"}
    revoke = live_ops(event(events.USER_ACCESS_REVOKED, data), PARIS)
    assert revoke == [["access", "live:acme:access:crm", "live:acme:users:crm", "u-7",
                       "3536942400000001", "1768471200000000", 0]]
    later = live_ops(event(events.USER_ACCESS_GRANTED, data, "2026-01-15T10:00:00.000001Z"),
                     PARIS)
    assert later[0][4] == "3536942400000002"
    assert later[0][5] == "1768471200000001"


def test_access_does_not_depend_on_the_tenants_zone() -> None:
    """The order is an instant, not a local day."""
    grant = event(events.USER_ACCESS_GRANTED, {"user_id": "u-7", "module": "crm"},
                  "2025-12-31T23:30:00Z")
    assert live_ops(grant, PARIS) == live_ops(grant, NEW_YORK)


def test_a_type_no_live_counter_follows_makes_no_update() -> None:
    """A configured meter's type is stored and metered, but no entitlement check reads it
    live."""
    assert live_ops(event("api.call", {"tokens": 5}), PARIS) == []


# --- the claim --------------------------------------------------------------------------------

def test_the_claim_names_the_events_identity_source_and_id() -> None:
    """docs/events.md: (source, id) is the event; the claim is blake2b-128 of
    'source NUL id', so the same pair from another tenant, time or type claims the same."""
    expected = "claim:" + hashlib.blake2b(b"crm\x00e-1", digest_size=16).hexdigest()
    first = event(events.EMAIL_SENT, {"count": 1})
    assert claim_key(first) == expected
    assert len(expected) == len("claim:") + 32
    other = event(events.COMPANY_CREATED, {"company_id": "c"}, "2030-05-05T00:00:00Z",
                  tenant="globex")
    assert claim_key(other) == expected


def test_the_separator_keeps_source_and_id_apart() -> None:
    """('ab', 'c') and ('a', 'bc') would both read 'abc' if joined without a separator."""
    one = event(events.EMAIL_SENT, {"count": 1}, source="ab", event_id="c")
    two = event(events.EMAIL_SENT, {"count": 1}, source="a", event_id="bc")
    assert claim_key(one) != claim_key(two)
    assert claim_key(one) != claim_key(event(events.EMAIL_SENT, {"count": 1}, event_id="e-2"))
