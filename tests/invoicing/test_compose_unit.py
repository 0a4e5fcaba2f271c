"""What a billing date puts on an invoice (services/invoicing/compose.py), on a small catalog
and tenant documents built in memory. Every amount is worked out by hand in the docstring.

The tenant is in Europe/Paris (UTC+1 in winter, UTC+2 from 2026-03-29 01:00Z), monthly,
anchored on 1 January 2026, VAT 20 %. The period billed in most tests is March 2026:
[2026-03-01, 2026-04-01), from 2026-02-28T23:00Z to 2026-03-31T22:00Z; its last local day
starts at 2026-03-30T22:00Z.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.invoicing.adjustments import Adjuster, adjustment_lines
from services.invoicing.compose import (
    EMAILS_METER,
    EXTRA_USERS_METER,
    PeriodUsage,
    advance_lines,
    arrears_lines,
    arrears_quantities,
    period_email_allowance,
    support_since,
)
from services.invoicing.extra_users import (
    billable_by_period,
    extra_users,
    seat_capacity,
)
from shared.billing.periods import Period
from shared.billing.seats import access_intervals
from shared.catalog import Catalog, parse_catalog
from shared.events import USER_ACCESS_GRANTED, USER_ACCESS_REVOKED
from shared.subscription import TenantState
from tests.builders import tenant_document

pytestmark = pytest.mark.unit

# Zones read at import: a unit test opens no file (the zone cache keeps them).
ZONES = [ZoneInfo(name) for name in ("Europe/Paris", "America/Santiago", "America/Havana")]
MARCH = Period(date(2026, 3, 1), date(2026, 4, 1))
FEBRUARY = Period(date(2026, 2, 1), date(2026, 3, 1))
MARCH_START = "2026-02-28T23:00:00Z"  # Paris midnight of 1 March (UTC+1)
MARCH_END = "2026-03-31T22:00:00Z"  # Paris midnight of 1 April (UTC+2)
MARCH_LAST_DAY = "2026-03-30T22:00:00Z"  # Paris midnight of 31 March (UTC+2)
AccessRow = tuple[str, str, datetime, str]
Key = tuple[str, str | None]


def _catalog(**changes: Any) -> Catalog:
    """Two plans, seat packs for a module and a suite, e-mails, a feature with a trial, a
    one-time item and two support plans; crm bills extra users at 9.00 a month."""
    monthly = {"P1M": "10.00", "P1Y": "100.00"}
    data: dict[str, Any] = {
        "version": "test", "currency": "EUR",
        "modules": [
            {"id": "sales", "extra_users": "bill", "extra_user_price": {"P1M": "15.00"}},
            {"id": "crm", "extra_users": "bill", "extra_user_price": {"P1M": "9.00"}},
            {"id": "accounting", "extra_users": "bill",
             "extra_user_price": {"P1M": "20.00"}},
            {"id": "emailing", "extra_users": "deny"},
            {"id": "support", "extra_users": "deny", "support_price_per_hour": "120.00"}],
        "suites": [{"id": "business", "modules": ["sales", "crm", "accounting"]}],
        "plans": [
            {"id": "essentials", "rank": 1, "modules": ["sales", "crm", "emailing"],
             "price": {"P1M": "49.00", "P1Y": "490.00"}, "companies": 1, "contacts": 10},
            {"id": "professional", "rank": 2,
             "modules": ["sales", "crm", "accounting", "emailing"],
             "price": {"P1M": "99.00", "P1Y": "990.00"}, "companies": 3, "contacts": 10}],
        "packs": [
            {"id": "seats-crm", "kind": "seats", "module": "crm", "price": monthly},
            {"id": "seats-sales", "kind": "seats", "module": "sales", "price": monthly},
            {"id": "seats-business", "kind": "seats", "suite": "business",
             "price": {"P1M": "25.00"}},
            {"id": "emails-1000", "kind": "emails", "module": "emailing", "units": 1000,
             "price": {"P1M": "5.00"}},
            {"id": "analytics", "kind": "feature", "feature": "analytics",
             "price": {"P1M": "30.00"}, "single_instance": True, "trial_days": 14},
            {"id": "training", "kind": "one_time", "price": {"once": "150.00"}},
            {"id": "vip", "kind": "support", "module": "support",
             "price": {"P1Y": "680.00"}, "single_instance": True,
             "support": {"type": "bank", "hours_per_year": "10",
                         "overage_price_per_hour": "90.00"}},
            {"id": "orangecare", "kind": "support", "module": "support",
             "price": {"P1Y": "120.00"}, "single_instance": True,
             "support": {"type": "daily", "minutes_per_user_per_day": 30,
                         "overage_price_per_hour": "90.00", "auto_renew": True}}],
        "email_overage_price": "0.002"}
    data.update(changes)
    return parse_catalog(data)


CATALOG = _catalog()


def _tenant(*lots: dict[str, Any], **fields: Any) -> TenantState:
    return tenant_document(*lots, **{"anchor": "2026-01-01",
                                     "created_at": "2025-12-20T10:00:00Z", **fields})


def _lot(lot_id: str, item: str, kind: str, quantity: int = 1, units: int = 1,
         **fields: Any) -> dict[str, Any]:
    lot: dict[str, Any] = {"id": lot_id, "item": item, "kind": kind, "quantity": quantity,
                           "units": units, "state": "active",
                           "bought_at": "2026-02-10T09:00:00Z"}
    lot.update(fields)
    return lot


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _grant(module: str, user: str, when: str) -> AccessRow:
    return (module, user, _at(when), USER_ACCESS_GRANTED)


def _revoke(module: str, user: str, when: str) -> AccessRow:
    return (module, user, _at(when), USER_ACCESS_REVOKED)


def _summary(lines: list[Any]) -> list[tuple[str, str | None, Decimal, Decimal, Decimal]]:
    return [(x.kind, x.module, x.quantity, x.unit_price, x.amount) for x in lines]


# --- in advance (R9.1) -------------------------------------------------------------------


def test_the_plan_and_every_pack_lot_are_charged_in_advance() -> None:
    """Lots bought 10 Feb, active at the March start: plan 49.00; 2 × seats-crm at 10.00 =
    20.00; 1 × emails-1000 at 5.00 = 5.00. Subtotal 74.00."""
    view = _tenant(_lot("l-seats", "seats-crm", "seats", 2),
                   _lot("l-mail", "emails-1000", "emails", units=1000))
    lines = advance_lines(view, CATALOG, MARCH)
    assert _summary(lines) == [
        ("plan", None, Decimal(1), Decimal("49.00"), Decimal("49.00")),
        ("pack", "crm", Decimal(2), Decimal("10.00"), Decimal("20.00")),
        ("pack", "emailing", Decimal(1), Decimal("5.00"), Decimal("5.00"))]
    assert sum(x.amount for x in lines) == Decimal("74.00")
    assert all(x.period == MARCH for x in lines)
    assert lines[1].source["lot"] == "l-seats"
    assert lines[1].source["period"] == {"from": "2026-03-01", "to": "2026-04-01"}


def test_an_annual_tenant_is_charged_the_annual_prices_but_not_its_support_plan() -> None:
    """Cycle P1Y: plan 490.00, 3 × seats-crm at 100.00 = 300.00. The VIP support plan,
    priced 680.00 a year, is a one-year contract invoiced on its own (R8.4), never with the
    period's fees."""
    view = _tenant(_lot("l-1", "seats-crm", "seats", 3),
                   _lot("l-vip", "vip", "support", contract_start="2026-02-10",
                        contract_end="2027-02-10"), cycle="P1Y", anchor="2026-03-01")
    period = Period(date(2026, 3, 1), date(2027, 3, 1))
    assert [x.amount for x in advance_lines(view, CATALOG, period)] == [
        Decimal("490.00"), Decimal("300.00")]


def test_a_lot_bought_at_the_periods_first_instant_is_left_out() -> None:
    """R4.2, R9.2: a lot bought at Paris midnight of 1 March (2026-02-28T23:00Z) was charged
    for the whole period by its own purchase invoice; one bought a second earlier renews
    here at 10.00."""
    view = _tenant(_lot("l-at-start", "seats-crm", "seats", bought_at=MARCH_START),
                   _lot("l-before", "seats-crm", "seats", bought_at="2026-02-28T22:59:59Z"))
    lines = advance_lines(view, CATALOG, MARCH)
    assert [x.source.get("lot") for x in lines] == [None, "l-before"]
    assert lines[1].amount == Decimal("10.00")


def test_trials_one_time_items_support_plans_and_ended_lots_are_not_charged() -> None:
    """R5.3 (trials free), R4.6 (a one-time item, even one recorded with its 150.00, is never
    renewed), support plans are contracts of their own (R8.4), a cancelled lot ended at the
    period start (R4.4), a lot bought after the start. Only the plan remains: 49.00."""
    view = _tenant(
        _lot("l-trial", "analytics", "feature", state="trialing", trial=True,
             ends_at="2026-03-10T09:00:00Z"),
        _lot("l-once", "training", "one_time", unit_price="150.00"),
        _lot("l-vip", "vip", "support", contract_start="2026-02-10",
             contract_end="2027-02-10"),
        _lot("l-cancelled", "seats-crm", "seats", state="cancelled", ends_at=MARCH_START),
        _lot("l-later", "seats-crm", "seats", bought_at="2026-03-05T09:00:00Z"))
    assert _summary(advance_lines(view, CATALOG, MARCH)) == [
        ("plan", None, Decimal(1), Decimal("49.00"), Decimal("49.00"))]


def test_an_upgrade_bought_at_the_period_start_charges_the_plan_it_left() -> None:
    """R4.2: essentials → professional at the March start; the upgrade's purchase charged
    the difference 99.00 − 49.00 for the whole period, so the advance charges 49.00."""
    view = _tenant(plan="professional",
                   plan_changes=[{"at": MARCH_START, "previous": "essentials"}])
    assert [x.description for x in advance_lines(view, CATALOG, MARCH)] == [
        "plan essentials (P1M)"]
    assert advance_lines(view, CATALOG, MARCH)[0].amount == Decimal("49.00")


def test_an_upgrade_at_the_start_of_a_period_whose_midnight_is_repeated() -> None:
    """America/Havana, 1 Nov 2026: clocks go back from 01:00 to 00:00, so local midnight
    occurs twice; the period starts at the first, 00:00 UTC-4 = 2026-11-01T04:00Z. An
    upgrade essentials → professional at that instant was charged 99.00 − 49.00 = 50.00 for
    the whole period by its purchase; the advance charges 49.00 (period total 99.00), as in
    Paris above, not 99.00 (total 149.00)."""
    view = _tenant(plan="professional", time_zone="America/Havana", anchor="2026-10-01",
                   plan_changes=[{"at": "2026-11-01T04:00:00Z", "previous": "essentials"}])
    november = Period(date(2026, 11, 1), date(2026, 12, 1))
    assert [x.amount for x in advance_lines(view, CATALOG, november)] == [Decimal("49.00")]


def test_a_downgrade_taking_effect_at_the_start_charges_the_lower_plan() -> None:
    """R4.5: professional scheduled down to essentials at the March start: 49.00, both as a
    pending change and once recorded as a plan change."""
    pending = _tenant(plan="professional", pending_plan="essentials",
                      pending_plan_at=MARCH_START)
    recorded = _tenant(plan="essentials",
                       plan_changes=[{"at": MARCH_START, "previous": "professional"}])
    for view in (pending, recorded):
        assert _summary(advance_lines(view, CATALOG, MARCH)) == [
            ("plan", None, Decimal(1), Decimal("49.00"), Decimal("49.00"))]


# --- seat capacity (R6.2, R6.4) ---------------------------------------------------------


def test_seat_capacity_counts_lots_active_on_the_last_day() -> None:
    """crm in March: 2 seats cancelled to end at the period end (count, R4.4), 1 suite seat
    bought on 31 March (counts, R6.2), 4 seats that ended as the last day began (do not),
    seats of sales (do not): 2 + 1 = 3."""
    view = _tenant(
        _lot("l-cancelled", "seats-crm", "seats", 2, state="cancelled", ends_at=MARCH_END),
        _lot("l-suite", "seats-business", "seats", bought_at="2026-03-31T10:00:00Z"),
        _lot("l-gone", "seats-crm", "seats", 4, state="expired", ends_at=MARCH_LAST_DAY),
        _lot("l-sales", "seats-sales", "seats", 5))
    assert seat_capacity(view, CATALOG, "crm", MARCH) == 3
    assert seat_capacity(view, CATALOG, "sales", MARCH) == 5 + 1
    assert seat_capacity(view, CATALOG, "accounting", MARCH) == 1


def test_seat_capacity_on_the_last_day_of_february() -> None:
    """February 2026 ends at Paris midnight of 1 March, 2026-02-28T23:00Z; its last day
    starts 2026-02-27T23:00Z. A lot ending one second into 28 Feb counts (3 seats); one
    ending as 28 Feb began does not; a lot of 2 × 5 seats counts 10: 13."""
    view = _tenant(
        _lot("l-a", "seats-crm", "seats", 3, state="expired", ends_at="2026-02-27T23:00:01Z"),
        _lot("l-b", "seats-crm", "seats", 7, state="expired", ends_at="2026-02-27T23:00:00Z"),
        _lot("l-c", "seats-crm", "seats", 2, units=5, bought_at="2026-01-05T09:00:00Z"))
    assert seat_capacity(view, CATALOG, "crm", FEBRUARY) == 13


def test_counting_many_periods_reads_lot_instants_written_with_an_offset() -> None:
    """Lots written with Paris offsets, counted for February and March 2026 together (as late
    usage counts, R9.4) and one period at a time: the same capacities. crm seats: 2 bought
    at 2026-03-01T00:00+01:00, the instant February ends (not in February: it must be
    bought before the end); 3 ending at 2026-02-28T00:00:01+01:00, one second into
    February's last day (in February, not March); 1 ending 2026-02-28T00:00+01:00, as that
    day began (neither). February 3, March 2: of four crm users granted in January, 1 extra
    user in February, 2 in March."""
    view = _tenant(
        _lot("l-new", "seats-crm", "seats", 2, bought_at="2026-03-01T00:00:00+01:00"),
        _lot("l-a", "seats-crm", "seats", 3, state="expired",
             bought_at="2026-01-05T10:00:00+01:00", ends_at="2026-02-28T00:00:01+01:00"),
        _lot("l-b", "seats-crm", "seats", 1, state="expired",
             bought_at="2026-01-05T10:00:00+01:00", ends_at="2026-02-28T00:00:00+01:00"))
    users = access_intervals([_grant("crm", f"u-{n}", "2026-01-10T09:00:00+01:00")
                              for n in range(4)])
    counted = billable_by_period(view, [CATALOG, CATALOG], [FEBRUARY, MARCH], users, {"crm"})
    assert counted == [{"crm": 1}, {"crm": 2}]
    assert [seat_capacity(view, CATALOG, "crm", p) for p in (FEBRUARY, MARCH)] == [3, 2]


# --- extra users (R6.1, R6.4) -----------------------------------------------------------


def _three_crm_users() -> list[AccessRow]:
    """crm in March: u-1 granted in January and kept; u-2 granted and revoked within March
    (had access at a moment); u-3 granted on 31 March; the administrator; u-old revoked
    before March; u-next granted at the period end."""
    return [
        _grant("crm", "u-1", "2026-01-10T09:00:00Z"),
        _grant("crm", "u-2", "2026-03-05T09:00:00Z"),
        _revoke("crm", "u-2", "2026-03-06T09:00:00Z"),
        _grant("crm", "u-3", "2026-03-31T12:00:00Z"),
        _grant("crm", "u-admin", "2026-01-01T09:00:00Z"),
        _grant("crm", "u-old", "2026-01-10T09:00:00Z"),
        _revoke("crm", "u-old", MARCH_START),
        _grant("crm", "u-next", MARCH_END)]


def test_extra_users_are_users_with_access_less_seats_admin_excluded() -> None:
    """3 users with access (u-1, u-2, u-3), admin excluded, 2 seats: 1 billable."""
    view = _tenant(_lot("l-seats", "seats-crm", "seats", 2))
    counted = extra_users(view, CATALOG, MARCH, _three_crm_users())
    assert sorted(counted) == ["crm", "sales"]  # emailing denies extra users (R6.3)
    crm = counted["crm"]
    assert (crm.billable, crm.users, crm.capacity) == (1, ["u-1", "u-2", "u-3"], 2)
    assert crm.since == _at(MARCH_START)
    assert counted["sales"].billable == 0


def test_a_module_gained_by_an_upgrade_counts_users_from_the_upgrade() -> None:
    """essentials → professional on 2026-03-20T09:00Z brings accounting (R4.2). u-a held
    access only before (not counted), u-b since January (counted), u-c from 21 March
    (counted): 2 billable, no seats."""
    upgrade = "2026-03-20T09:00:00Z"
    view = _tenant(plan="professional", plan_changes=[{"at": upgrade,
                                                       "previous": "essentials"}])
    access = [_grant("accounting", "u-a", "2026-03-05T09:00:00Z"),
              _revoke("accounting", "u-a", "2026-03-10T09:00:00Z"),
              _grant("accounting", "u-b", "2026-01-10T09:00:00Z"),
              _grant("accounting", "u-c", "2026-03-21T09:00:00Z"),
              _grant("crm", "u-a", "2026-03-05T09:00:00Z")]
    counted = extra_users(view, CATALOG, MARCH, access)
    assert counted["accounting"].users == ["u-b", "u-c"]
    assert counted["accounting"].billable == 2
    assert counted["accounting"].since == _at(upgrade)
    assert counted["crm"].since == _at(MARCH_START)  # crm was in both plans
    assert counted["crm"].users == ["u-a"]


def _accounting_users(period: Period, downgrade_at: str, **fields: Any) -> dict[str, int]:
    """Billable accounting users of `period` for professional with a downgrade to
    essentials (no accounting) at its end: still pending, and once recorded (R4.5)."""
    pending = _tenant(plan="professional", pending_plan="essentials",
                      pending_plan_at=downgrade_at, **fields)
    recorded = _tenant(plan="essentials", **fields,
                       plan_changes=[{"at": downgrade_at, "previous": "professional"}])
    access = [_grant("accounting", "u-b", "2026-03-10T15:00:00Z"),
              _grant("accounting", "u-c", "2026-08-20T15:00:00Z")]
    found: dict[str, int] = {}
    for name, view in (("pending", pending), ("recorded", recorded)):
        counted = extra_users(view, CATALOG, period, access)
        found[name] = counted["accounting"].billable if "accounting" in counted else -1
    return found


def test_a_downgrade_at_the_period_end_still_bills_the_period_it_ends() -> None:
    """R4.5, R6.4: professional until Paris midnight of 1 April, then essentials. March was
    professional's, so its accounting user u-b (granted 10 March) is billed: 1 × 20.00."""
    assert _accounting_users(MARCH, MARCH_END) == {"pending": 1, "recorded": 1}


def test_a_downgrade_at_a_period_end_whose_midnight_is_skipped() -> None:
    """America/Santiago, anchor 6 Aug 2026: the period [6 Aug, 6 Sep) ends at the first
    instant of 6 Sep, 01:00 local (UTC-3) = 2026-09-06T04:00Z, midnight being skipped.
    professional until then, accounting users u-b (since 10 March) and u-c (20 August):
    2 × 20.00 = 40.00 for August, whether the downgrade is pending or already recorded."""
    august = Period(date(2026, 8, 6), date(2026, 9, 6))
    assert _accounting_users(august, "2026-09-06T04:00:00Z", time_zone="America/Santiago",
                             anchor="2026-08-06") == {"pending": 2, "recorded": 2}


@given(users=st.integers(0, 8), seats=st.integers(0, 8), admin=st.booleans())
def test_billable_extra_users_never_go_below_zero(users: int, seats: int,
                                                  admin: bool) -> None:
    """R6.4: max(0, users − seats); the administrator never counts."""
    view = _tenant(_lot("l-seats", "seats-crm", "seats", seats)) if seats else _tenant()
    access = [_grant("crm", f"u-{i}", "2026-03-02T09:00:00Z") for i in range(users)]
    if admin:
        access.append(_grant("crm", "u-admin", "2026-03-02T09:00:00Z"))
    assert extra_users(view, CATALOG, MARCH, access)["crm"].billable == max(0, users - seats)


# --- e-mails (R7.1, R7.2) ---------------------------------------------------------------


def test_the_email_allowance_counts_every_lot_active_in_the_period_in_full() -> None:
    """R7.1: 1 × 1000 bought on 20 March (whole allowance, never prorated) + 2 × 1000
    cancelled to end at the period end + 5 × 1000 ended at the period start (no) + seats
    (no): 3000."""
    view = _tenant(
        _lot("l-mid", "emails-1000", "emails", units=1000, bought_at="2026-03-20T09:00:00Z"),
        _lot("l-cancelled", "emails-1000", "emails", 2, units=1000, state="cancelled",
             ends_at=MARCH_END),
        _lot("l-gone", "emails-1000", "emails", 5, units=1000, state="expired",
             ends_at=MARCH_START),
        _lot("l-seats", "seats-crm", "seats", 9))
    assert period_email_allowance(view, MARCH) == 3000


# --- arrears (R9.1, R6.4, R7.2, R8) -----------------------------------------------------


def test_arrears_lines_for_extra_users_and_email_overage() -> None:
    """3 users with access, 2 seats, admin excluded: 1 extra user × 9.00 = 9.00. 1500
    e-mails sent, allowance 1000: 500 × 0.002 = 1.00."""
    view = _tenant(_lot("l-seats", "seats-crm", "seats", 2),
                   _lot("l-mail", "emails-1000", "emails", units=1000))
    usage = PeriodUsage(emails=1500, access=_three_crm_users())
    lines = arrears_lines(view, CATALOG, MARCH, usage)
    assert _summary(lines) == [
        ("extra_users", "crm", Decimal(1), Decimal("9.00"), Decimal("9.00")),
        ("email_overage", "emailing", Decimal(500), Decimal("0.002"), Decimal("1.00"))]
    users = lines[0].source
    assert (users["users"], users["seat_capacity"], users["admin_user"]) == (
        ["u-1", "u-2", "u-3"], 2, "u-admin")
    assert (users["from"], users["to"]) == ("2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z")
    assert (lines[1].source["sent"], lines[1].source["allowance"]) == (1500, 1000)
    assert arrears_quantities(view, CATALOG, MARCH, usage) == {
        (EXTRA_USERS_METER, "crm"): Decimal(1), (EXTRA_USERS_METER, "sales"): Decimal(0),
        (EMAILS_METER, "emailing"): Decimal(500)}


def test_nothing_beyond_the_allowance_gives_no_line() -> None:
    """1000 sent, allowance 1000: overage 0, no line; its quantity is still recorded as 0
    (the basis of a later adjustment, R9.4)."""
    view = _tenant(_lot("l-mail", "emails-1000", "emails", units=1000))
    usage = PeriodUsage(emails=1000)
    assert arrears_lines(view, CATALOG, MARCH, usage) == []
    assert arrears_quantities(view, CATALOG, MARCH, usage)[(EMAILS_METER, "emailing")] == 0


def test_without_an_overage_price_emails_are_not_billed() -> None:
    """R7.2: no overage price, so 5000 e-mails beyond the allowance bill nothing."""
    catalog = _catalog(email_overage_price=None)
    usage = PeriodUsage(emails=5000)
    assert arrears_lines(_tenant(), catalog, MARCH, usage) == []
    assert (EMAILS_METER, "emailing") not in arrears_quantities(_tenant(), catalog, MARCH,
                                                               usage)


def test_support_time_without_a_plan_is_billed_at_the_catalog_rate() -> None:
    """R8.1: 50 min → 60, 10 min → 15: 75 min = 1.25 h × 120.00 = 150.00. A session of
    February is not March's."""
    usage = PeriodUsage(support=[("s-1", _at("2026-03-03T10:00:00Z"), 50, 1),
                                 ("s-2", _at("2026-03-04T10:00:00Z"), 10, 2),
                                 ("s-0", _at("2026-02-27T10:00:00Z"), 30, 1)])
    lines = arrears_lines(_tenant(), CATALOG, MARCH, usage)
    assert _summary(lines) == [
        ("support_overage", "support", Decimal("1.25"), Decimal("120.00"), Decimal("150.00"))]
    assert lines[0].meter == "support_minutes@120.00"
    assert lines[0].source["event_ids"] == ["s-1", "s-2"]
    assert arrears_quantities(_tenant(), CATALOG, MARCH, usage)[
        ("support_minutes@120.00", "support")] == Decimal("1.25")


def test_support_beyond_an_exhausted_bank_is_billed_at_the_plans_rate() -> None:
    """R8.2: VIP (10 h = 600 min) from 15 January. 590 min on 10 Feb → 600, the whole bank.
    In March 50 min → 60 min, nothing left: 1 h × 90.00 = 90.00."""
    view = _tenant(_lot("l-vip", "vip", "support", bought_at="2026-01-15T09:00:00Z",
                        contract_start="2026-01-15", contract_end="2027-01-15"))
    usage = PeriodUsage(support=[("s-feb", _at("2026-02-10T10:00:00Z"), 590, 1),
                                 ("s-mar", _at("2026-03-10T10:00:00Z"), 50, 1)])
    assert _summary(arrears_lines(view, CATALOG, MARCH, usage)) == [
        ("support_overage", "support", Decimal(1), Decimal("90.00"), Decimal("90.00"))]


def test_support_sessions_matter_from_the_first_contracts_start() -> None:
    """R8.2, R8.4: a VIP contract from 15 Jan and a daily plan rolled over since 1 June 2025
    reach back before March; a contract starting after March does not."""
    view = _tenant(
        _lot("l-vip", "vip", "support", contract_start="2026-01-15", contract_end="2027-01-15"),
        _lot("l-daily", "orangecare", "support", since="2025-06-01",
             contract_start="2026-06-01", contract_end="2027-06-01"),
        _lot("l-next", "vip", "support", contract_start="2026-04-01",
             contract_end="2027-04-01"))
    assert support_since(view, MARCH) == date(2025, 6, 1)
    assert support_since(_tenant(_lot("l-next", "vip", "support", contract_start="2026-04-01",
                                      contract_end="2027-04-01")), MARCH) == date(2026, 3, 1)


def test_level_3_work_never_draws_on_the_daily_allowance() -> None:
    """R8.3: OrangeCare × 2 users = 60 min a day, rate 90.00/h.
    - 10 March: 40 min L3 → 45, billed (never the allowance); 10 min L1 → 15, allowance;
    - 11 March: 50 min L2 → 60, the new day's allowance;
    - 12 March: 80 min L1 → 90: 60 from the allowance, 30 billed.
    Billed 45 + 30 = 75 min = 1.25 h × 90.00 = 112.50."""
    view = _tenant(_lot("l-daily", "orangecare", "support", 2, bought_at=MARCH_START,
                        contract_start="2026-03-01", contract_end="2027-03-01"))
    usage = PeriodUsage(support=[("s-1", _at("2026-03-10T08:00:00Z"), 40, 3),
                                 ("s-2", _at("2026-03-10T10:00:00Z"), 10, 1),
                                 ("s-3", _at("2026-03-11T10:00:00Z"), 50, 2),
                                 ("s-4", _at("2026-03-12T10:00:00Z"), 80, 1)])
    lines = arrears_lines(view, CATALOG, MARCH, usage)
    assert _summary(lines) == [
        ("support_overage", "support", Decimal("1.25"), Decimal("90.00"), Decimal("112.50"))]
    assert lines[0].source["event_ids"] == ["s-1", "s-4"]


# --- late usage (R9.4) -------------------------------------------------------------------


def test_adjustments_bill_the_difference_with_what_was_billed() -> None:
    """R9.4, per (meter, module), sorted by meter:
    - e-mails recomputed 400, billed 500: −100 × 0.002 = −0.20;
    - crm extra users recomputed 3, billed 1: +2 × 9.00 = 18.00;
    - sales unchanged (2 and 2): no line;
    - support at 90.00/h recomputed 0.5 h, never billed: 0.5 × 90.00 = 45.00."""
    recomputed: dict[Key, Decimal] = {
        (EMAILS_METER, "emailing"): Decimal(400), (EXTRA_USERS_METER, "crm"): Decimal(3),
        (EXTRA_USERS_METER, "sales"): Decimal(2),
        ("support_minutes@90.00", "support"): Decimal("0.5")}
    billed: dict[Key, Decimal] = {
        (EMAILS_METER, "emailing"): Decimal(500), (EXTRA_USERS_METER, "crm"): Decimal(1),
        (EXTRA_USERS_METER, "sales"): Decimal(2)}
    late = {EXTRA_USERS_METER: ["e-1"], "support_minutes": ["e-2"]}
    lines = adjustment_lines(_tenant(), CATALOG, FEBRUARY, recomputed, billed, late)
    assert _summary(lines) == [
        ("adjustment", "emailing", Decimal(-100), Decimal("0.002"), Decimal("-0.20")),
        ("adjustment", "crm", Decimal(2), Decimal("9.00"), Decimal("18.00")),
        ("adjustment", "support", Decimal("0.5"), Decimal("90.00"), Decimal("45.00"))]
    assert all(x.period == FEBRUARY for x in lines)
    assert [x.source["corrects"] for x in lines] == [
        "email_overage", "extra_users", "support_overage"]
    assert [x.source["late_event_ids"] for x in lines] == [[], ["e-1"], ["e-2"]]


def test_an_adjustment_is_rounded_once_half_up() -> None:
    """R3.2: 0.25 h at 0.34/h = 0.085 → 0.09 (half-up; half-even would give 0.08); the
    opposite correction −0.085 → −0.09 (half away from zero)."""
    key: Key = ("support_minutes@0.34", "support")
    up = adjustment_lines(_tenant(), CATALOG, MARCH, {key: Decimal("0.25")}, {}, {})
    down = adjustment_lines(_tenant(), CATALOG, MARCH, {}, {key: Decimal("0.25")}, {})
    assert [x.amount for x in up + down] == [Decimal("0.09"), Decimal("-0.09")]


def test_a_meter_without_a_price_gives_no_adjustment() -> None:
    """An extra-user meter of a module the catalog no longer knows has no unit price."""
    lines = adjustment_lines(_tenant(), CATALOG, MARCH, {(EXTRA_USERS_METER, "gone"):
                                                         Decimal(4)}, {}, {})
    assert lines == []


@given(recomputed=st.integers(0, 5000), billed=st.integers(0, 5000))
def test_an_email_adjustment_is_the_delta_times_the_price(recomputed: int,
                                                          billed: int) -> None:
    """R9.4: (recomputed − billed) × 0.002, rounded once half away from zero (R3.2): a
    delta of d e-mails is 2d thousandths, i.e. (2|d| + 5) // 10 cents with d's sign. One line
    when they differ, none otherwise."""
    key: Key = (EMAILS_METER, "emailing")
    lines = adjustment_lines(_tenant(), CATALOG, MARCH, {key: Decimal(recomputed)},
                             {key: Decimal(billed)}, {})
    delta = recomputed - billed
    if delta == 0:
        assert lines == []
        return
    cents = (2 * abs(delta) + 5) // 10 * (1 if delta > 0 else -1)
    assert [(x.quantity, x.amount) for x in lines] == [
        (Decimal(delta), Decimal(cents).scaleb(-2))]


@given(deltas=st.lists(st.sampled_from(["1", "1.0", "1.00", "2", "-1", "-1.0", "0.5"]),
                       min_size=1, max_size=12))
def test_one_adjuster_prices_each_period_as_written(deltas: list[str]) -> None:
    """R9.4: a tenant's periods are priced by one Adjuster, which rounds each distinct
    (difference, price) once. Equal values written with other digits (1, 1.0, 1.00) still
    give each line its own quantity and description as written, and the same amount: crm
    at 9.00, a difference of 1 is 9.00, of 2 18.00, of −1 −9.00, of 0.5 4.50."""
    adjuster = Adjuster(_tenant())
    key: Key = (EXTRA_USERS_METER, "crm")
    months = [Period(date(2024 + k // 12, k % 12 + 1, 1),
                     date(2024 + (k + 1) // 12, (k + 1) % 12 + 1, 1)) for k in range(12)]
    amounts = {"1": "9.00", "2": "18.00", "-1": "-9.00", "0.5": "4.50"}
    for period, delta in zip(months, deltas, strict=False):
        now = Decimal(5) + Decimal(delta)
        (line,) = adjuster.lines(CATALOG, period, {key: now}, {key: Decimal(5)}, {})
        assert (str(line.quantity), str(line.amount)) == (
            delta, amounts[delta.removesuffix(".00").removesuffix(".0")])
        assert line.description.endswith(f"recomputed {now:f}, billed 5")
        assert line.period == period
