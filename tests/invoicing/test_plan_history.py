"""TenantView.plan_at: the plan in force at an instant, from the changes the document keeps
(R4.2 upgrades now, R4.5 downgrades at a period end)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.invoicing.models import TenantView


def _view(**extra: object) -> TenantView:
    return TenantView.model_validate({
        "id": "t", "plan": "gold", "cycle": "P1M", "anchor": "2026-03-01",
        "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
        "admin_user": "u-admin", **extra})


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
