"""The tenant document both services read: the plan in force at an instant, from the changes
it keeps (R4.2 upgrades now, R4.5 downgrades at a period end), and its schema version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.subscription import TenantState

pytestmark = pytest.mark.unit


def _view(**extra: object) -> TenantState:
    return TenantState.model_validate({
        "id": "t", "plan": "gold", "cycle": "P1M", "anchor": "2026-03-01",
        "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
        "admin_user": "u-admin", "created_at": "2026-03-01T00:00:00Z", **extra})


def _at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def test_before_each_recorded_change_the_plan_it_left_was_in_force() -> None:
    # bronze until the 10th, silver until the 20th, gold since.
    view = _view(plan_changes=[{"at": _at(10).isoformat(), "previous": "bronze"},
                               {"at": _at(20).isoformat(), "previous": "silver"}])
    assert [view.plan_at(_at(d)) for d in (1, 9, 10, 19, 20, 31)] == [
        "bronze", "bronze", "silver", "silver", "gold", "gold"]
    assert view.plan_changes_within(_at(1), _at(20)) == [_at(10)]


def test_a_scheduled_downgrade_applies_from_its_instant() -> None:
    view = _view(plan_changes=[{"at": _at(10).isoformat(), "previous": "bronze"}],
                 pending_plan="silver", pending_plan_at=datetime(2026, 4, 1, tzinfo=UTC))
    assert view.plan_at(_at(5)) == "bronze"
    assert view.plan_at(_at(31, 23)) == "gold"
    assert view.plan_at(datetime(2026, 4, 1, tzinfo=UTC)) == "silver"


def test_a_document_without_changes_has_had_one_plan() -> None:
    assert _view().plan_at(_at(1)) == "gold"


def test_a_document_of_an_unknown_schema_is_refused_not_misread() -> None:
    with pytest.raises(ValidationError, match="schema 3 is not known"):
        _view(schema_version=3)


def test_a_schema_1_document_reads_as_schema_2_on_the_oldest_catalog_version() -> None:
    """Written before catalog versions (R10.5): no `catalog_version`, read as None (the
    oldest version), and written back as schema 2."""
    old = _view(schema_version=1)
    assert old.schema_version == 2
    assert old.catalog_version is None
    assert old.catalog_version_at(_at(5)) is None
    assert TenantState.model_validate_json(old.model_dump_json()).schema_version == 2


def test_a_migration_applies_from_its_instant_and_earlier_periods_keep_their_version() -> None:
    """R10.5: 2026-11 until April 1st (the confirmed move), 2027-01 from then; once applied,
    the change it recorded still says 2026-11 before its instant."""
    april = datetime(2026, 4, 1, tzinfo=UTC)
    pending = _view(catalog_version="2026-11", pending_catalog="2027-01",
                    pending_catalog_at=april.isoformat())
    assert [pending.catalog_version_at(t) for t in (_at(31, 23), april)] == [
        "2026-11", "2027-01"]
    applied = _view(catalog_version="2027-01",
                    catalog_changes=[{"at": april.isoformat(), "previous": "2026-11"}])
    assert [applied.catalog_version_at(t) for t in (_at(31, 23), april)] == [
        "2026-11", "2027-01"]


@given(st.lists(st.integers(min_value=1, max_value=30), min_size=0, max_size=6, unique=True),
       st.integers(min_value=0, max_value=31))
def test_the_version_at_an_instant_is_the_one_the_last_move_before_it_set(
        move_days: list[int], day: int) -> None:
    """R10.5: versions v0, v1, … moved to on sorted days of March; at any instant the version
    in force is the one of the last move at or before it (v0 before the first), whether the
    last move is still scheduled or already applied."""
    days = sorted(move_days)
    at = [datetime(2026, 3, d, tzinfo=UTC) for d in days]
    applied = _view(catalog_version=f"v{len(days)}", catalog_changes=[
        {"at": a.isoformat(), "previous": f"v{k}"} for k, a in enumerate(at)])
    instant = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=day, hours=12)
    expected = f"v{sum(1 for a in at if a <= instant)}"
    assert applied.catalog_version_at(instant) == expected
    if at:  # the last move still scheduled: the same answers
        pending = _view(catalog_version=f"v{len(days) - 1}", catalog_changes=[
            {"at": a.isoformat(), "previous": f"v{k}"} for k, a in enumerate(at[:-1])],
            pending_catalog=f"v{len(days)}", pending_catalog_at=at[-1].isoformat())
        assert pending.catalog_version_at(instant) == expected
