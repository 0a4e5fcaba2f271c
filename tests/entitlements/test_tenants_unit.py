"""A tenant document's own rules (services/entitlements/tenants.py), as pure functions: a new
tenant (R4.1, R10.5), the document's view, tacit renewal (R4.1), a lot cancelled or restored
(R4.4) and the history cursor's shape (R4.9). Every value is worked out by hand.

The tenant is monthly (P1M) in Paris, anchored on 2026-03-01, so the period of 20 March is
1–31 March and ends at 1 April 00:00 Paris, which is 2026-03-31T22:00:00Z (CEST, UTC+2, from
29 March)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.entitlements.lifecycle import Effects
from services.entitlements.models import TenantCreate
from services.entitlements.tenants import (
    NewTenant,
    change_lot,
    history_cursor,
    switch_renewal,
    tenant_view,
)
from shared.catalog import Catalog
from shared.catalog_versions import CatalogVersions
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.times import parse_zone
from tests.builders import tenant_document

pytestmark = pytest.mark.unit

parse_zone("Europe/Paris", "tz")  # the list of known zone names, read once and cached
NOW = datetime(2026, 3, 20, 9, tzinfo=UTC)  # 10:00 in Paris (CET)
PERIOD_END = "2026-03-31T22:00:00Z"
ACTOR = {"user_id": "u-admin", "role": "admin", "api_key": None}


def _catalog(version: str, essentials: str) -> Catalog:
    return Catalog.model_validate({
        "version": version, "currency": "EUR",
        "modules": [{"id": "crm", "extra_users": "deny"}],
        "plans": [{"id": "essentials", "rank": 1, "modules": ["crm"],
                   "price": {"P1M": essentials}, "companies": 1, "contacts": 100,
                   "features": ["export"]}],
        "packs": [{"id": "seats-crm", "kind": "seats", "module": "crm",
                   "price": {"P1M": "10.00"}}]})


OLD, NEW = _catalog("2026-01", "39.00"), _catalog("2026-03", "49.00")
VERSIONS = CatalogVersions((OLD, NEW))


def _body(**fields: Any) -> TenantCreate:
    body: dict[str, Any] = {"id": "acme", "plan": "essentials", "time_zone": "Europe/Paris",
                            "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-admin"}
    body.update(fields)
    return TenantCreate.model_validate(body)


def _lot(**fields: Any) -> dict[str, Any]:
    lot = {"id": "lot-1", "item": "seats-crm", "kind": "seats", "quantity": 2, "units": 2,
           "state": "active", "bought_at": "2026-03-05T09:00:00Z", "unit_price": "10.00"}
    lot.update(fields)
    return lot


def _events(effects: Effects) -> list[dict[str, Any]]:
    return [orjson.loads(entry) for entry in effects.history]


def test_a_new_tenant_gets_the_current_version_and_starts_today() -> None:
    """No anchor: the period starts today, 20 March, and runs to 19 April; the price is the
    current version's 49.00."""
    effects = Effects()
    new = NewTenant.check(_body(), VERSIONS).create(None, NOW, effects, ACTOR)
    assert (new.status, new.anchor, new.catalog_version) == ("active", date(2026, 3, 20),
                                                             "2026-03")
    assert new.vat_rate == Decimal("0.20")
    [created] = _events(effects)
    assert created["type"] == "tenant.created"
    assert created["plan_price"] == "49.00"
    assert created["period"] == {"from": "2026-03-20", "to": "2026-04-20"}


def test_a_named_earlier_version_prices_the_new_tenant() -> None:
    """R10.5: the admin may name the older price list (39.00); a future anchor (1 April)
    schedules the start."""
    effects = Effects()
    terms = NewTenant.check(_body(catalog_version="2026-01", anchor="2026-04-01"), VERSIONS)
    new = terms.create(None, NOW, effects, ACTOR)
    assert (new.status, new.catalog_version) == ("scheduled", "2026-01")
    assert _events(effects)[0]["plan_price"] == "39.00"


@pytest.mark.parametrize(("fields", "field"), [
    ({"catalog_version": "1999-01"}, "catalog_version"),
    ({"plan": "platinum"}, "plan"),
    ({"cycle": "P1Y"}, "cycle"),  # essentials has no yearly price here
    ({"currency": "USD"}, "currency"),
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ({"vat_rate": "1.5"}, "vat_rate"),
])
def test_a_body_the_catalog_cannot_honour_names_its_field(fields: dict[str, Any],
                                                          field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        NewTenant.check(_body(**fields), VERSIONS)
    assert refused.value.field == field


@pytest.mark.parametrize(("anchor", "allowed"), [
    ("2026-03-19", False),  # yesterday in Paris
    ("2027-03-21", True),   # 366 days after 20 March 2026
    ("2027-03-22", False),  # 367 days
])
def test_the_anchor_is_today_or_at_most_366_days_ahead(anchor: str, allowed: bool) -> None:
    terms = NewTenant.check(_body(anchor=anchor), VERSIONS)
    if allowed:
        assert terms.create(None, NOW, Effects(), ACTOR).status == "scheduled"
    else:
        with pytest.raises(ValidationFailed, match="anchor"):
            terms.create(None, NOW, Effects(), ACTOR)


def test_an_existing_tenant_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        NewTenant.check(_body(), VERSIONS).create(tenant_document(), NOW, Effects(), ACTOR)


def test_the_view_prices_renewing_lots_per_unit_and_licence() -> None:
    """Renewing: the lot's next cycle is 2 x 10.00 x 3 licences = 60.00 (R4.12); the plan
    price is the tenant's own version's (39.00), and no end date is shown."""
    state = tenant_document(_lot(licences=3), catalog_version="2026-01")
    view = tenant_view(state, OLD, NOW)
    assert view["plan_price"] == "39.00"
    assert view["catalog_version"] == "2026-01"
    assert view["features"] == ["export"]
    assert view["ends_at"] is None
    assert view["period"] == {"from": "2026-03-01", "to": "2026-04-01"}
    [lot] = view["lots"]
    assert (lot["next_cycle_amount"], lot["ends_at"]) == ("60.00", None)


def test_without_renewal_lots_end_with_the_subscription_and_have_no_next_cycle() -> None:
    state = tenant_document(_lot(), renewal=False, ends_at=PERIOD_END)
    view = tenant_view(state, OLD, NOW)
    assert view["ends_at"] == PERIOD_END
    [lot] = view["lots"]
    assert (lot["next_cycle_amount"], lot["ends_at"]) == (None, PERIOD_END)


def test_switching_renewal_off_ends_at_the_period_end_once() -> None:
    """R4.1: off ends the subscription at 1 April 00:00 Paris; asking again changes nothing
    and records nothing."""
    state, effects = tenant_document(), Effects()
    switch_renewal(state, False, NOW, effects, ACTOR)
    switch_renewal(state, False, NOW, effects, ACTOR)
    assert (state.renewal, state.ends_at) == (False, datetime(2026, 3, 31, 22, tzinfo=UTC))
    [changed] = _events(effects)
    assert (changed["type"], changed["ends_at"]) == ("renewal.changed", PERIOD_END)


def test_an_ended_subscription_cannot_switch_renewal() -> None:
    with pytest.raises(Conflict):
        switch_renewal(tenant_document(status="ended"), True, NOW, Effects(), ACTOR)


def test_a_cancelled_lot_lasts_to_the_period_end_and_can_be_restored() -> None:
    """R4.4: cancelled on 20 March, the lot grants until 1 April 00:00 Paris, with no
    refund; uncancelled, it is active again with no end."""
    state, effects = tenant_document(_lot()), Effects()
    answer = change_lot(state, "lot-1", False, NOW, effects, ACTOR)
    assert answer["lot"]["state"] == "cancelled"
    assert state.lots[0].ends_at == datetime(2026, 3, 31, 22, tzinfo=UTC)
    restored = change_lot(state, "lot-1", True, NOW, effects, ACTOR)
    assert (restored["lot"]["state"], restored["lot"]["ends_at"]) == ("active", None)
    cancelled, uncancelled = _events(effects)
    assert (cancelled["type"], cancelled["ends_at"], cancelled["refund"]) == (
        "lot.cancelled", PERIOD_END, "0.00")
    assert uncancelled["type"] == "lot.uncancelled"


def test_lot_changes_refuse_the_wrong_state_and_unknown_lots() -> None:
    state = tenant_document(_lot(), _lot(id="lot-2", state="cancelled",
                                         cancel_reason="plan_change"))
    with pytest.raises(Conflict) as active:
        change_lot(state, "lot-1", True, NOW, Effects(), ACTOR)
    assert active.value.error_code == "not_cancelled"
    with pytest.raises(Conflict) as moot:
        change_lot(state, "lot-2", True, NOW, Effects(), ACTOR)
    assert moot.value.error_code == "moot_after_plan_change"
    with pytest.raises(Conflict) as twice:
        change_lot(state, "lot-2", False, NOW, Effects(), ACTOR)
    assert twice.value.error_code == "not_active"
    with pytest.raises(NotFound):
        change_lot(state, "lot-9", False, NOW, Effects(), ACTOR)


@pytest.mark.parametrize(("cursor", "valid"), [
    ("1700000000000-0", True),
    ("18446744073709551615-18446744073709551614", True),  # 2**64 - 1, one below it
    ("18446744073709551615-18446744073709551615", False),  # the largest id: nothing after
    ("18446744073709551616-0", False),  # 2**64 does not fit
    ("1700000000000", False),
    ("-1-0", False),
    ("١٢-0", False),  # Arabic-Indic digits are not ASCII
])
def test_a_history_cursor_is_a_stream_id(cursor: str, valid: bool) -> None:
    assert history_cursor(cursor) is valid
