"""The console's pure parts: chart ranges and buckets in the tenant's calendar, the purchase
form read as the API's body, the R5 table it shows, and small helpers. Worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.console.account import ACTIONS, R5_TABLE, purchase_request
from services.console.charts import HEIGHT, usage_chart, usage_range
from services.console.web import CREDIT, EXPORT, OPERATE, READ_USAGE, bounded_int, plain
from shared.auth import ApiKey, Role
from shared.errors import ValidationFailed

PARIS = ZoneInfo("Europe/Paris")
pytestmark = pytest.mark.unit


def test_the_day_range_is_the_last_31_local_days_up_to_today() -> None:
    """2026-03-20 10:00 UTC is 11:00 in Paris: 31 days from 2026-02-18 to the end of the 20th."""
    start, end = usage_range("day", datetime(2026, 3, 20, 10, tzinfo=UTC), PARIS)
    assert (start.isoformat(), end.isoformat()) == ("2026-02-18T00:00:00+01:00",
                                                    "2026-03-21T00:00:00+01:00")


def test_the_month_range_crosses_the_year_back_to_the_twelfth_month() -> None:
    """From 2026-01-15: February 2025 to January 2026, both in winter time (UTC+1)."""
    start, end = usage_range("month", datetime(2026, 1, 15, 12, tzinfo=UTC), PARIS)
    assert (start.isoformat(), end.isoformat()) == ("2025-02-01T00:00:00+01:00",
                                                    "2026-02-01T00:00:00+01:00")


def test_the_hour_range_ends_after_the_current_local_hour_across_a_clock_change() -> None:
    """2026-03-29 01:30 UTC is 03:30 in Paris, just after the switch to summer time (01:00
    UTC): the range ends at 04:00+02:00 (02:00 UTC) and starts 48 hours earlier."""
    start, end = usage_range("hour", datetime(2026, 3, 29, 1, 30, tzinfo=UTC), PARIS)
    assert end == datetime(2026, 3, 29, 2, tzinfo=UTC)
    assert start == datetime(2026, 3, 27, 2, tzinfo=UTC)


def _point(start: str, value: int, module: str | None = None) -> dict[str, object]:
    return {"from": start, "to": "", "group": {} if module is None else {"module": module},
            "value": value}


def test_empty_buckets_are_drawn_as_zero_and_modules_are_stacked() -> None:
    """Three days; 3 crm and 1 sales e-mail on the 2nd day, nothing else. Peak 4 in a plot
    160 high: crm is 160 × 3/4 = 120 high from y 40, sales 40 high on top of it from y 0."""
    start = datetime(2026, 3, 1, tzinfo=PARIS)
    end = start + timedelta(days=3)
    chart = usage_chart([_point("2026-03-02T00:00:00+01:00", 3, "crm"),
                         _point("2026-03-02T00:00:00+01:00", 1, "sales")],
                        start, end, "day", PARIS, "module")
    assert [bar.total for bar in chart.bars] == [0, 4, 0]
    assert [(s.series, s.value, s.y, s.height) for s in chart.bars[1].segments] == [
        ("crm", 3, 40.0, 120.0), ("sales", 1, 0.0, 40.0)]
    assert chart.bars[0].segments == []
    assert [name for name, _ in chart.series] == ["crm", "sales"]


def test_the_short_day_of_the_clock_change_is_one_bucket() -> None:
    """28 to 30 March 2026 in Paris: three local days (the 29th has 23 hours), three bars."""
    start = datetime(2026, 3, 28, tzinfo=PARIS)
    end = datetime(2026, 3, 31, tzinfo=PARIS)
    chart = usage_chart([], start, end, "day", PARIS, None)
    assert [bar.start.isoformat() for bar in chart.bars] == [
        "2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00"]


@given(st.dictionaries(st.integers(0, 30), st.integers(0, 10**9), max_size=31))
def test_every_bucket_is_drawn_once_and_every_point_unchanged(values: dict[int, int]) -> None:
    start = datetime(2026, 1, 1, tzinfo=PARIS)
    end = start + timedelta(days=31)
    points = [_point((start + timedelta(days=d)).isoformat(), v) for d, v in values.items()]
    chart = usage_chart(points, start, end, "day", PARIS, None)
    assert len(chart.bars) == 31
    assert {i: bar.total for i, bar in enumerate(chart.bars) if i in values} == values
    assert all(bar.total == 0 for i, bar in enumerate(chart.bars) if i not in values)
    assert all(0 <= s.height <= HEIGHT for bar in chart.bars for s in bar.segments)


ACTOR = {"actor_user": "u-1", "actor_role": "owner", "action": "buy"}


def test_one_item_is_the_single_form_and_several_are_items() -> None:
    one = purchase_request({**ACTOR, "item_0": "seats-crm", "quantity_0": "2"}, False)
    assert (one.item, one.quantity, one.items, one.confirm) == ("seats-crm", 2, None, False)
    several = purchase_request({**ACTOR, "item_0": "professional", "item_1": "",
                                "item_2": "seats-crm", "quantity_2": "3"}, True)
    assert one.actor.user_id == "u-1"
    assert several.item is None
    assert [(i.item, i.quantity) for i in several.items or []] == [
        ("professional", None), ("seats-crm", 3)]


@pytest.mark.parametrize(("fields", "field"), [
    ({}, "item_0"),
    ({"item_0": "seats-crm", "quantity_0": "1e9"}, "quantity_0"),
    ({"item_0": "seats-crm", "quantity_0": "²"}, "quantity_0"),
    ({"item_0": "seats-crm", "quantity_0": "0"}, "quantity_0"),
    ({"item_0": "seats-crm", "action": "renew"}, "action"),
])
def test_a_bad_purchase_form_names_its_field(fields: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        purchase_request({**ACTOR, **fields}, False)
    assert refused.value.field == field


def test_the_r5_table_shown_is_the_rules_table() -> None:
    """R5: owner buys, quotes, trials; admin quotes (if allowed), trials, asks for a
    feature; supervisor only asks for a feature; agent nothing; R5.1: sub_account nothing."""
    assert ACTIONS == ("buy", "quote", "trial", "request_feature")
    assert R5_TABLE == [("owner", [True, True, True, False]),
                        ("admin", [False, True, True, True]),
                        ("supervisor", [False, False, False, True]),
                        ("agent", [False, False, False, False]),
                        ("sub_account", [False, False, False, False])]


def test_bounded_int_takes_ascii_digits_within_bounds_only() -> None:
    assert bounded_int({"n": " 42 "}, "n") == 42
    assert bounded_int({"n": ""}, "n", default=7) == 7
    for bad in ("-1", "１２", "1000001", "99999999999999999999"):
        with pytest.raises(ValidationFailed):
            bounded_int({"n": bad}, "n")


def test_plain_reads_provenance_without_nulls() -> None:
    assert plain({"meter": "api_calls", "lot": None, "event_ids": ["a", "b"],
                  "period": {"from": "2026-03-01", "to": "2026-04-01"}}) == (
        "meter=api_calls, event_ids=a, b, period=from=2026-03-01, to=2026-04-01")


def test_each_console_check_admits_the_roles_of_its_api_routes() -> None:
    """The role table: finance exports, dashboard does not; credit notes are admin's; the
    operators page wants an admin key limited to no tenant."""
    def key(role: Role, tenant: str | None = "acme") -> ApiKey:
        return ApiKey(id="key-x", role=role, tenant=tenant)

    assert [EXPORT.allows(key(r)) for r in Role] == [False, True, False, True]
    assert [READ_USAGE.allows(key(r)) for r in Role] == [False, False, True, True]
    assert [CREDIT.allows(key(r)) for r in Role] == [False, False, False, True]
    assert (OPERATE.allows(key(Role.ADMIN)), OPERATE.allows(key(Role.ADMIN, None))) == (
        False, True)
