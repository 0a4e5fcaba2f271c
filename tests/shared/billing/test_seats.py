"""Seat counting (R6.4) as pure functions: hand-checked cases and window properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.billing.seats import access_intervals, users_by_window, users_with_access

pytestmark = pytest.mark.unit

GRANT, REVOKE = "user.access.granted", "user.access.revoked"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def test_r6_4_a_revoked_then_regranted_user_counts_once() -> None:
    rows = [("crm", "u-1", at(1), GRANT), ("crm", "u-1", at(5), REVOKE),
            ("crm", "u-1", at(9), GRANT)]
    assert users_with_access(access_intervals(rows), at(0), at(24)) == {"crm": {"u-1"}}
    # Between the revocation and the new grant nobody had access.
    assert users_with_access(access_intervals(rows), at(6), at(8)) == {}


def test_r6_4_access_ending_exactly_at_the_window_start_does_not_count() -> None:
    rows = [("crm", "u-1", at(1), GRANT), ("crm", "u-1", at(10), REVOKE)]
    assert users_with_access(access_intervals(rows), at(10), at(20)) == {}
    assert users_with_access(access_intervals(rows), at(9), at(20)) == {"crm": {"u-1"}}


events_strategy = st.lists(st.tuples(st.sampled_from(["crm", "sales"]),
                                     st.sampled_from(["u-1", "u-2", "u-3"]),
                                     st.integers(0, 100), st.sampled_from([GRANT, REVOKE])),
                           max_size=30)


@given(rows=events_strategy, cut=st.integers(1, 99))
def test_a_window_split_in_two_sees_the_same_users(rows: list[tuple[str, str, int, str]],
                                                   cut: int) -> None:
    intervals = access_intervals([(m, u, at(h), k) for m, u, h, k in rows])
    whole = users_with_access(intervals, at(0), at(100))
    left = users_with_access(intervals, at(0), at(cut))
    right = users_with_access(intervals, at(cut), at(100))
    for module in set(whole) | set(left) | set(right):
        assert whole.get(module, set()) == left.get(module, set()) | right.get(module, set())


@given(rows=events_strategy)
def test_the_order_of_arrival_does_not_matter(rows: list[tuple[str, str, int, str]]) -> None:
    timed = [(m, u, at(h), k) for m, u, h, k in rows]
    assert access_intervals(timed) == access_intervals(list(reversed(timed)))


def test_r6_4_access_granted_and_revoked_at_one_instant_was_never_held() -> None:
    """Found by the split property: a zero-length access inside a window counted once."""
    rows = [("crm", "u-1", at(5), GRANT), ("crm", "u-1", at(5), REVOKE)]
    assert users_with_access(access_intervals(rows), at(0), at(10)) == {}


@given(rows=events_strategy, bounds=st.lists(st.integers(0, 110), min_size=1, max_size=8,
                                             unique=True),
       modules=st.none() | st.sets(st.sampled_from(["crm", "sales", "hr"])))
def test_r6_4_all_windows_in_one_pass_see_what_each_window_sees(
        rows: list[tuple[str, str, int, str]], bounds: list[int],
        modules: set[str] | None) -> None:
    """Late usage counts dozens of periods of a tenant in one pass (`users_by_window`):
    each window gets, per module asked for, the users whose access overlaps it, as the
    definition says (a span [from, to) meets [start, end) when from < end and to > start),
    windows touching or apart alike."""
    intervals = access_intervals([(m, u, at(h), k) for m, u, h, k in rows])
    # Windows also start and end where access changes: the boundary cases.
    edges = sorted(set(bounds) | {h for _, _, h, _ in rows[::2]})
    windows = [(at(a), at(b)) for a, b in pairwise(edges)]
    apart = [(at(a), at(a + 1)) for a in edges[::2]]  # with gaps between them
    for shape in (windows, apart):
        found = users_by_window(intervals, shape, modules)
        assert len(found) == len(shape)
        for (start, end), users in zip(shape, found, strict=True):
            expected: dict[str, set[str]] = {}
            for (module, user), spans in intervals.items():
                if (modules is None or module in modules) and any(
                        opened < end and (closed is None or closed > start)
                        for opened, closed in spans):
                    expected.setdefault(module, set()).add(user)
            assert {m: u for m, u in users.items() if u} == expected


def test_r6_4_a_span_over_several_windows_counts_in_each() -> None:
    """u-1 holds crm from 5 h to 25 h: it meets [0, 10), [10, 20) and [20, 30), not
    [30, 40); u-2, granted at 30 h and never revoked, meets only [30, 40)."""
    rows = [("crm", "u-1", at(5), GRANT), ("crm", "u-1", at(25), REVOKE),
            ("crm", "u-2", at(30), GRANT)]
    windows = [(at(h), at(h + 10)) for h in (0, 10, 20, 30)]
    assert users_by_window(access_intervals(rows), windows) == [
        {"crm": {"u-1"}}, {"crm": {"u-1"}}, {"crm": {"u-1"}}, {"crm": {"u-2"}}]
