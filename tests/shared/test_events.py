"""The usage-event contract (docs/events.md) as the validator applies it, without a broker:
what is accepted, and each refusal naming its field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.events import EventValidator, InvalidEvent

pytestmark = pytest.mark.unit

VALIDATOR = EventValidator()


def _event(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"specversion": "1.0", "id": "e-1", "source": "crm",
                            "type": "email.sent", "subject": "acme",
                            "time": "2026-11-22T10:15:00+01:00", "data": {"count": 250}}
    body.update(fields)
    return body


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_a_valid_event_is_read_in_utc_with_its_extensions_kept() -> None:
    event = VALIDATOR.validate(_event(traceparent="00-abc", region={"zone": "eu"}))
    assert event.time == datetime(2026, 11, 22, 9, 15, tzinfo=UTC)
    assert event.key == ("crm", "e-1")
    assert dict(event.extensions) == {"traceparent": "00-abc", "region": {"zone": "eu"}}


@pytest.mark.parametrize(("time", "accepted"), [
    ("2000-01-01T00:00:00Z", True), ("1999-12-31T23:59:59Z", False),
    ("2099-12-31T23:59:59Z", True), ("2100-01-01T00:00:00Z", False),
    ("2000-01-01T00:30:00+01:00", False),  # 1999-12-31T23:30Z
    ("0001-01-01T00:00:00+01:00", False), ("9999-12-31T23:30:00Z", False),
    ("2026-11-22T10:15:00", False),  # no offset
])
def test_time_lies_in_2000_to_2100(time: str, accepted: bool) -> None:
    if accepted:
        VALIDATOR.validate(_event(time=time))
        return
    with pytest.raises(InvalidEvent) as refused:
        VALIDATOR.validate(_event(time=time))
    assert refused.value.field == "time"


@pytest.mark.parametrize(("count", "accepted"), [
    (1, True), (10**9, True), (0, False), (10**9 + 1, False), (2**63 - 1, False),
    (-1, False), (1.5, False), ("12", False), (True, False),
])
def test_a_count_is_a_whole_number_from_1_to_10_9(count: object, accepted: bool) -> None:
    if accepted:
        VALIDATOR.validate(_event(data={"count": count}))
        return
    with pytest.raises(InvalidEvent) as refused:
        VALIDATOR.validate(_event(data={"count": count}))
    assert refused.value.field == "data.count"


def test_nesting_stops_at_32_levels_in_data_and_extensions() -> None:
    VALIDATOR.validate(_event(data={"count": 1, "meta": _nested(31)}))
    with pytest.raises(InvalidEvent) as in_data:
        VALIDATOR.validate(_event(data={"count": 1, "meta": _nested(32)}))
    assert (in_data.value.code, in_data.value.field) == ("too_deep", "data")
    VALIDATOR.validate(_event(trace=_nested(32)))
    with pytest.raises(InvalidEvent) as in_extension:
        VALIDATOR.validate(_event(trace=_nested(33)))
    assert (in_extension.value.code, in_extension.value.field) == ("too_deep", "trace")


@pytest.mark.parametrize(("fields", "code", "field"), [
    ({"type": "email.opened"}, "unknown_type", "type"),
    ({"specversion": "0.3"}, "not_cloudevents", "specversion"),
    ({"id": "x" * 257}, "invalid_field", "id"),
    ({"subject": " "}, "invalid_field", "subject"),
    ({"data": []}, "invalid_field", "data"),
    ({"type": "support.session.completed", "data": {"minutes": 30, "level": 4}},
     "invalid_field", "data.level"),
])
def test_each_refusal_names_its_field(fields: dict[str, Any], code: str, field: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        VALIDATOR.validate(_event(**fields))
    assert (refused.value.code, refused.value.field) == (code, field)
