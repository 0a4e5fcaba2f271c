"""Declared meters (shared/meters.py): a definition is checked field by field, a file of them
is refused naming `meters[i].field`, and the values a configured meter reads from an event
are checked against the bounds before the event is accepted.

The meter files are held in memory (unit tests read no file); expected values are worked out
by hand in the docstrings.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import PosixPath
from typing import Any

import pytest
from pydantic import ValidationError

from shared import events
from shared.events import EventValidator, InvalidEvent
from shared.meters import (
    BUILTIN_METERS,
    MAX_METER_VALUE,
    Aggregation,
    Meter,
    MeterError,
    MeterRegistry,
    lookup,
    parse_meter_file,
)

pytestmark = pytest.mark.unit


class MemoryFile(PosixPath):
    """A meter file's name and content, read from memory."""

    content: bytes

    def read_bytes(self) -> bytes:
        return self.content


def meter_file(text: str, name: str = "meters.yaml") -> MemoryFile:
    path = MemoryFile(name)
    path.content = text.encode()
    return path


def meter(**fields: Any) -> Meter:
    values: dict[str, Any] = {"slug": "api_tokens", "event_type": "api.call",
                              "aggregation": "SUM", "value_property": "usage.tokens"}
    values.update(fields)
    return Meter.model_validate(values)


def api_call(data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "c-1", "source": "gateway", "type": "api.call",
            "subject": "acme", "time": "2026-01-15T10:00:00Z", "data": data}


# --- one definition -------------------------------------------------------------------------

def test_a_definition_is_read_with_its_defaults() -> None:
    tokens = meter(group_by={"model": "request.model"})
    assert tokens.aggregation is Aggregation.SUM
    assert tokens.group_by == {"model": "request.model"}
    assert tokens.description == ""
    assert meter(aggregation="COUNT", value_property=None).group_by == {}


@pytest.mark.parametrize(("slug", "accepted"), [
    ("a", True), ("api_tokens_2", True),
    ("a" + "b" * 63, True),  # 64 characters: the longest
    ("a" + "b" * 64, False),  # 65
    ("Api", False), ("2xx", False), ("_x", False), ("api-tokens", False), ("", False),
])
def test_a_slug_is_lowercase_snake_of_at_most_64(slug: str, accepted: bool) -> None:
    if accepted:
        assert meter(slug=slug).slug == slug
        return
    with pytest.raises(ValidationError) as refused:
        meter(slug=slug)
    assert refused.value.errors()[0]["loc"] == ("slug",)


def test_a_slug_followed_by_a_newline_is_refused() -> None:
    with pytest.raises(ValidationError):
        meter(slug="tokens\n")


@pytest.mark.parametrize(("fields", "where"), [
    ({"value_property": "usage..tokens"}, ("value_property",)),
    ({"value_property": "usage.tokens."}, ("value_property",)),
    ({"value_property": "2tokens"}, ("value_property",)),
    ({"group_by": {"Model": "model"}}, ("group_by",)),  # group name not a slug
    ({"group_by": {"model": "a b"}}, ("group_by",)),  # path not dotted names
    ({"aggregation": "AVG"}, ("aggregation",)),
    ({"unit": "tokens"}, ("unit",)),  # unknown fields are refused
])
def test_a_bad_field_is_refused_by_name(fields: dict[str, Any], where: tuple[str]) -> None:
    with pytest.raises(ValidationError) as refused:
        meter(**fields)
    assert refused.value.errors()[0]["loc"] == where


def test_a_definition_is_frozen() -> None:
    with pytest.raises(ValidationError):
        meter().slug = "other"  # type: ignore[misc]


def test_the_built_in_meters_cover_every_built_in_type() -> None:
    """Eight meters with distinct slugs, reading the six types of docs/events.md; the
    seat meter (R6.4) is the only SEATS one."""
    slugs = [m.slug for m in BUILTIN_METERS]
    assert len(slugs) == len(set(slugs)) == 8
    assert {m.event_type for m in BUILTIN_METERS} == set(events.BUILTIN_TYPES)
    seats = [m.slug for m in BUILTIN_METERS if m.aggregation is Aggregation.SEATS]
    assert seats == ["users_with_access"]


# --- a file of definitions --------------------------------------------------------------------

def test_a_yaml_file_declares_more_meters() -> None:
    parsed = parse_meter_file(meter_file(
        "meters:\n"
        "  - slug: api_tokens\n"
        "    event_type: api.call\n"
        "    aggregation: SUM\n"
        "    value_property: usage.tokens\n"
        "    group_by: {model: request.model}\n"
        "  - slug: api_calls\n"
        "    event_type: api.call\n"
        "    aggregation: COUNT\n"))
    assert [(m.slug, m.aggregation, m.value_property) for m in parsed] == [
        ("api_tokens", Aggregation.SUM, "usage.tokens"), ("api_calls", Aggregation.COUNT, None)]
    assert parsed[0].group_by == {"model": "request.model"}


def test_a_json_file_is_read_as_json() -> None:
    text = '{"meters": [{"slug": "peak", "event_type": "api.call", "aggregation": "MAX",' \
           ' "value_property": "latency_ms"}]}'
    assert [m.slug for m in parse_meter_file(meter_file(text, "meters.json"))] == ["peak"]


@pytest.mark.parametrize(("text", "where"), [
    ("meters: [unclosed\n", "meters"),  # not YAML
    ("- slug: x\n", "meters"),  # a list, not a mapping
    ("meters: {slug: x}\n", "meters"),  # a mapping, not a list
    ("{}\n", "meters"),
    ("meters:\n  - {slug: Tokens, event_type: a, aggregation: COUNT}\n", "meters[0].slug"),
    ("meters:\n  - {slug: ok, event_type: a, aggregation: COUNT}\n"
     "  - {slug: bad, aggregation: COUNT}\n", "meters[1].event_type"),
    ("meters:\n  - {slug: emails_sent, event_type: a, aggregation: COUNT}\n",
     "meters[0].slug"),  # a built-in slug
    ("meters:\n  - {slug: dup, event_type: a, aggregation: COUNT}\n"
     "  - {slug: dup, event_type: b, aggregation: COUNT}\n", "meters[1].slug"),
    ("meters:\n  - {slug: s, event_type: a, aggregation: SEATS}\n", "meters[0].aggregation"),
    ("meters:\n  - {slug: s, event_type: a, aggregation: SUM}\n", "meters[0].value_property"),
    ("meters:\n  - {slug: s, event_type: a, aggregation: UNIQUE_COUNT}\n",
     "meters[0].value_property"),
    ("meters:\n  - {slug: s, event_type: a, aggregation: COUNT, value_property: n}\n",
     "meters[0].value_property"),  # COUNT takes none
])
def test_a_bad_file_is_refused_naming_the_field(text: str, where: str) -> None:
    with pytest.raises(MeterError) as refused:
        parse_meter_file(meter_file(text))
    assert refused.value.field == where
    assert str(refused.value).startswith(f"{where}: ")


# --- the registry and the checks of configured types --------------------------------------

def test_the_registry_finds_meters_by_slug() -> None:
    registry = MeterRegistry([*BUILTIN_METERS, meter()])
    assert registry.get("api_tokens") == meter()
    assert registry.get("emails_sent") is BUILTIN_METERS[0]
    assert registry.get("nope") is None
    assert len(registry.all()) == 9
    assert MeterRegistry.load(None).all() == list(BUILTIN_METERS)


def test_only_types_no_built_in_declares_get_a_checker() -> None:
    """A configured meter on `email.sent` is checked by the built-in contract only."""
    registry = MeterRegistry([*BUILTIN_METERS, meter(),
                              meter(slug="mails", event_type=events.EMAIL_SENT,
                                    value_property="count")])
    assert set(registry.configured_types()) == {"api.call"}
    assert MeterRegistry(list(BUILTIN_METERS)).configured_types() == {}


def validator_for(*meters: Meter) -> EventValidator:
    return EventValidator(MeterRegistry([*BUILTIN_METERS, *meters]).configured_types())


def test_the_bound_is_10_to_the_15() -> None:
    """10^15 = 1 000 000 000 000 000: exact in a double, far inside Decimal128's 38 digits."""
    assert Decimal(1_000_000_000_000_000) == MAX_METER_VALUE


@pytest.mark.parametrize("value", [
    0, 1, -1, 12.5, "42", "1e15", 10**15, -(10**15), 1e15,  # 1e15 is MAX_METER_VALUE itself
])
def test_a_numeric_value_up_to_10_to_the_15_is_accepted(value: object) -> None:
    event = validator_for(meter()).validate(api_call({"usage": {"tokens": value}}))
    assert event.type == "api.call"


@pytest.mark.parametrize("value", [
    10**15 + 1, -(10**15) - 1,  # one past either bound
    "1e16", 1e300, "NaN", "Infinity", "-Infinity", float("inf"), "sNaN", "abc", "",
    True, [1], {"n": 1},
])
def test_a_numeric_value_out_of_bounds_or_not_a_number_is_refused(value: object) -> None:
    with pytest.raises(InvalidEvent) as refused:
        validator_for(meter()).validate(api_call({"usage": {"tokens": value}}))
    assert (refused.value.code, refused.value.field) == ("invalid_field", "data.usage.tokens")


@pytest.mark.parametrize("data", [{}, {"usage": 5}, {"usage": {"tokens": None}},
                                  {"usage": {"other": 1}}])
def test_a_missing_value_is_refused_naming_the_meter(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as refused:
        validator_for(meter()).validate(api_call(data))
    assert (refused.value.code, refused.value.field) == ("missing_field", "data.usage.tokens")
    assert "'api_tokens'" in refused.value.reason


def test_two_meters_on_one_type_are_both_checked() -> None:
    """`api.call` feeds a SUM of usage.tokens and a MAX of latency_ms: both must be there;
    a UNIQUE_COUNT value need only be present, not numeric; a COUNT needs nothing."""
    validator = validator_for(
        meter(), meter(slug="peak", aggregation="MAX", value_property="latency_ms"),
        meter(slug="callers", aggregation="UNIQUE_COUNT", value_property="caller"),
        meter(slug="calls", aggregation="COUNT", value_property=None))
    validator.validate(api_call({"usage": {"tokens": 3}, "latency_ms": 40, "caller": "x"}))
    with pytest.raises(InvalidEvent) as refused:
        validator.validate(api_call({"usage": {"tokens": 3}, "caller": "x"}))
    assert refused.value.field == "data.latency_ms"


def test_lookup_follows_a_dotted_path() -> None:
    data = {"usage": {"tokens": 7, "model": {"name": "m"}}, "flat": [1]}
    assert lookup(data, "usage.tokens") == 7
    assert lookup(data, "usage.model.name") == "m"
    assert lookup(data, "usage.missing") is None
    assert lookup(data, "usage.tokens.deeper") is None  # 7 is no mapping
    assert lookup(data, "flat.0") is None  # lists are not indexed
