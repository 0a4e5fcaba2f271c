"""The pure rules of entitlements, without any store: a tenant document on the clock
(lifecycle.py) and who may do what (policy.py). Expected values worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.entitlements.lifecycle import Effects, advance, next_due
from services.entitlements.policy import check_role, parse_vat_rate
from shared.errors import Forbidden, ValidationFailed
from shared.subscription import Actor, TenantState
from tests.builders import tenant_document

pytestmark = pytest.mark.unit


def _tenant(**fields: Any) -> TenantState:
    return tenant_document(**{"anchor": "2026-03-01", "admin_user": "u-1",
                              "created_at": "2026-02-20T10:00:00Z", **fields})


def _lot(**fields: Any) -> dict[str, Any]:
    lot: dict[str, Any] = {"id": "lot-1", "item": "seats-crm", "kind": "seats", "quantity": 2,
                           "units": 1, "state": "active", "bought_at": "2026-03-05T09:00:00Z"}
    lot.update(fields)
    return lot


def _event_types(effects: Effects) -> list[tuple[str, str]]:
    return [(orjson.loads(raw)["type"], orjson.loads(raw)["time"])
            for _, _, raw in effects.events]


def test_a_scheduled_tenant_starts_at_its_anchors_local_midnight() -> None:
    """Anchor 2026-03-01 in Paris (UTC+1 in winter): 2026-02-28T23:00Z."""
    state = _tenant(status="scheduled")
    assert next_due(state) == datetime(2026, 2, 28, 23, tzinfo=UTC)
    effects = Effects()
    started = advance(state, datetime(2026, 3, 1, 8, tzinfo=UTC), effects)
    assert started.status == "active"
    assert _event_types(effects) == [("subscription.started", "2026-02-28T23:00:00Z")]
    assert state.status == "scheduled"  # the step works on a copy


def test_a_cancelled_lot_expires_at_its_end_and_says_why() -> None:
    """Cancelled to end on 2026-04-01 00:00 Paris (UTC+2 after the 29 March change):
    2026-03-31T22:00Z. Nothing happens a second before; at that instant it expires."""
    state = _tenant(lots=[_lot(state="cancelled", ends_at="2026-03-31T22:00:00Z")])
    assert next_due(state) == datetime(2026, 3, 31, 22, tzinfo=UTC)
    before = advance(state, datetime(2026, 3, 31, 21, 59, 59, tzinfo=UTC), Effects())
    assert before.lots[0].state == "cancelled"
    effects = Effects()
    after = advance(state, datetime(2026, 4, 1, tzinfo=UTC), effects)
    assert after.lots[0].state == "expired"
    expired = [orjson.loads(raw) for _, _, raw in effects.events]
    assert [(e["type"], e["data"]["reason"]) for e in expired] == [("lot.expired", "cancelled")]
    assert next_due(after) is None


def test_renewal_off_ends_the_subscription_and_every_live_lot() -> None:
    state = _tenant(renewal=False, ends_at="2026-03-31T22:00:00Z",
                    lots=[_lot(), _lot(id="lot-2", item="emails-1000", kind="emails")])
    effects = Effects()
    ended = advance(state, datetime(2026, 4, 2, tzinfo=UTC), effects)
    assert ended.status == "ended"
    assert [lot.state for lot in ended.lots] == ["expired", "expired"]
    assert _event_types(effects) == [("lot.expired", "2026-03-31T22:00:00Z"),
                                     ("lot.expired", "2026-03-31T22:00:00Z"),
                                     ("subscription.ended", "2026-03-31T22:00:00Z")]
    assert next_due(ended) is None


@pytest.mark.parametrize(("action", "role", "allowed"), [
    ("buy", "owner", True), ("buy", "admin", False), ("buy", "agent", False),
    ("quote", "admin", True), ("quote", "supervisor", False),
    ("trial", "admin", True), ("trial", "agent", False),
    ("request_feature", "supervisor", True), ("request_feature", "owner", False),
    ("renew", "owner", True), ("renew", "admin", False),
])
def test_who_may_do_what(action: str, role: str, allowed: bool) -> None:
    actor = Actor.model_validate({"user_id": "u-2", "role": role})
    if allowed:
        check_role(action, actor)
        return
    with pytest.raises(Forbidden) as refused:
        check_role(action, actor)
    assert refused.value.field == "actor.role"
    assert refused.value.error_code == "role_forbidden"
    assert f"role '{role}'" in refused.value.message


@pytest.mark.parametrize("text", ["0.20", "0", "1", "0.055"])
def test_a_vat_rate_is_a_plain_decimal_from_0_to_1(text: str) -> None:
    assert parse_vat_rate(text) == Decimal(text)


@pytest.mark.parametrize("text", ["1.5", "-0.1", "2e-1", "abc", "", "NaN", "0.2.1"])
def test_any_other_vat_rate_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_vat_rate(text)
    assert refused.value.field == "vat_rate"
