"""Meters: what to aggregate from which events, declared as data (OpenMeter/Lago style).

Built-ins cover every type of docs/events.md; `METERS` names a YAML or JSON file declaring more
(slug, event type, aggregation, value property, group-by properties), so a product can meter
something new without a release. An invalid definition stops the start, naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared import events
from shared.events import DataChecker, InvalidEvent, both_checks

_SLUG = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PROPERTY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class Aggregation(StrEnum):
    COUNT = "COUNT"
    SUM = "SUM"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    MAX = "MAX"
    LATEST = "LATEST"
    # Distinct users who held access at any moment of a window (R6.4); built-in only.
    SEATS = "SEATS"


NEEDS_VALUE = frozenset({Aggregation.SUM, Aggregation.UNIQUE_COUNT, Aggregation.MAX,
                         Aggregation.LATEST})
NUMERIC = frozenset({Aggregation.SUM, Aggregation.MAX, Aggregation.LATEST})
# A declared meter's value per event: exact in a double and, summed over billions of events,
# far inside the 38 digits ClickHouse's Decimal128 aggregates in.
MAX_METER_VALUE = Decimal(10) ** 15


class Meter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str
    event_type: str
    aggregation: Aggregation
    value_property: str | None = None
    # Output group name -> data property path (dotted).
    group_by: dict[str, str] = Field(default_factory=dict)
    description: str = ""

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.fullmatch(value):
            raise ValueError("must match [a-z][a-z0-9_]* (at most 64 characters)")
        return value

    @field_validator("value_property")
    @classmethod
    def _value_property(cls, value: str | None) -> str | None:
        if value is not None and not _PROPERTY.fullmatch(value):
            raise ValueError("must be a dotted property path such as 'tokens' or 'usage.bytes'")
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not _SLUG.fullmatch(name):
                raise ValueError(f"group name '{name}' must match [a-z][a-z0-9_]*")
            if not _PROPERTY.fullmatch(path):
                raise ValueError(f"group '{name}': '{path}' is not a dotted property path")
        return value


BUILTIN_METERS: tuple[Meter, ...] = (
    Meter(slug="emails_sent", event_type=events.EMAIL_SENT, aggregation=Aggregation.SUM,
          value_property="count", group_by={"campaign_id": "campaign_id"},
          description="E-mails sent (R7)"),
    Meter(slug="users_with_access", event_type=events.USER_ACCESS_GRANTED,
          aggregation=Aggregation.SEATS, group_by={"module": "module"},
          description="Distinct users who held access to a module during the window (R6.4)"),
    Meter(slug="access_grants", event_type=events.USER_ACCESS_GRANTED,
          aggregation=Aggregation.COUNT, group_by={"module": "module"},
          description="Access grants"),
    Meter(slug="access_revocations", event_type=events.USER_ACCESS_REVOKED,
          aggregation=Aggregation.COUNT, group_by={"module": "module"},
          description="Access revocations"),
    Meter(slug="companies_created", event_type=events.COMPANY_CREATED,
          aggregation=Aggregation.COUNT, description="Companies attached (R7.3)"),
    Meter(slug="companies_deleted", event_type=events.COMPANY_DELETED,
          aggregation=Aggregation.COUNT, description="Companies detached (R7.3)"),
    Meter(slug="support_minutes", event_type=events.SUPPORT_SESSION_COMPLETED,
          aggregation=Aggregation.SUM, value_property="minutes",
          group_by={"level": "level", "user_id": "user_id"},
          description="Support minutes as reported, before R8.1 rounding"),
    Meter(slug="support_sessions", event_type=events.SUPPORT_SESSION_COMPLETED,
          aggregation=Aggregation.COUNT, group_by={"level": "level"},
          description="Support sessions"),
)


class MeterError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class MeterRegistry:
    def __init__(self, meters: list[Meter]) -> None:
        self._meters = {m.slug: m for m in meters}

    @classmethod
    def load(cls, path: Path | None) -> MeterRegistry:
        meters = list(BUILTIN_METERS)
        if path is not None:
            meters.extend(parse_meter_file(path))
        return cls(meters)

    def get(self, slug: str) -> Meter | None:
        return self._meters.get(slug)

    def all(self) -> list[Meter]:
        return list(self._meters.values())

    def configured_types(self) -> dict[str, DataChecker]:
        """Data checkers for event types that only configured meters declare."""
        checkers: dict[str, DataChecker] = {}
        for meter in self._meters.values():
            if meter.event_type in events.BUILTIN_TYPES:
                continue
            previous = checkers.get(meter.event_type)
            checkers[meter.event_type] = both_checks(previous, _value_checker(meter))
        return checkers


def parse_meter_file(path: Path) -> list[Meter]:
    raw_text = path.read_bytes()
    try:
        document = (orjson.loads(raw_text) if path.suffix == ".json"
                    else yaml.safe_load(raw_text))
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise MeterError("meters", f"{path} is not valid: {exc}") from None
    items = document.get("meters") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise MeterError("meters", f"{path} must hold a list under 'meters'")
    builtin_slugs = {m.slug for m in BUILTIN_METERS}
    meters: list[Meter] = []
    for index, item in enumerate(items):
        try:
            meter = Meter.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise MeterError(f"meters[{index}].{where}", first["msg"]) from None
        if meter.slug in builtin_slugs or any(m.slug == meter.slug for m in meters):
            raise MeterError(f"meters[{index}].slug", f"'{meter.slug}' is already defined")
        if meter.aggregation is Aggregation.SEATS:
            raise MeterError(f"meters[{index}].aggregation", "SEATS is built-in only")
        if meter.aggregation in NEEDS_VALUE and meter.value_property is None:
            raise MeterError(f"meters[{index}].value_property",
                             f"{meter.aggregation.value} needs a value property")
        if meter.aggregation is Aggregation.COUNT and meter.value_property is not None:
            raise MeterError(f"meters[{index}].value_property", "COUNT takes no value property")
        meters.append(meter)
    return meters


def lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _value_checker(meter: Meter) -> DataChecker:
    def check(data: Mapping[str, Any]) -> None:
        if meter.value_property is None:
            return
        value = lookup(data, meter.value_property)
        field = f"data.{meter.value_property}"
        if value is None:
            raise InvalidEvent("missing_field", field, f"is required by meter '{meter.slug}'")
        if meter.aggregation in NUMERIC:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise InvalidEvent("invalid_field", field, "must be a number")
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                raise InvalidEvent("invalid_field", field, "must be a number") from None
            if not number.is_finite() or abs(number) > MAX_METER_VALUE:
                raise InvalidEvent("invalid_field", field,
                                   f"must be a number from -{MAX_METER_VALUE} to {MAX_METER_VALUE}")

    return check


# --- a meter's value in ClickHouse SQL ---------------------------------------------------
# Shared by the usage API (services/metering/store.py) and the usage charges invoicing bills
# (R10.1), so a line's quantity is the figure `GET /v1/usage` answers. Every property name
# goes in as a bound parameter; only fixed fragments chosen by the aggregation are text.

def _json_path_args(dotted: str, params: dict[str, Any], prefix: str) -> str:
    names = []
    for i, part in enumerate(dotted.split(".")):
        name = f"{prefix}_{i}"
        params[name] = part
        names.append(f"{{{name}:String}}")
    return ", ".join(names)


def json_text(column: str, dotted: str, params: dict[str, Any], prefix: str) -> str:
    """A property as text: strings unquoted, numbers and the rest as their JSON text."""
    path = _json_path_args(dotted, params, prefix)
    return (f"if(JSONType({column}, {path}) = 'String', JSONExtractString({column}, {path}), "
            f"JSONExtractRaw({column}, {path}))")


def value_expression(meter: Meter, params: dict[str, Any]) -> str:
    """The aggregate of a non-SEATS meter over rows of `time` and `data`; adds the property
    path's parameters to `params`."""
    if meter.aggregation is Aggregation.COUNT:
        return "count()"
    assert meter.value_property is not None  # checked when the meter was loaded
    text = json_text("data", meter.value_property, params, "v")
    number = f"toDecimal128OrNull({text}, 9)"
    if meter.aggregation is Aggregation.SUM:
        return f"sum({number})"
    if meter.aggregation is Aggregation.MAX:
        return f"max({number})"
    if meter.aggregation is Aggregation.LATEST:
        return f"argMax({number}, time)"
    if meter.aggregation is Aggregation.UNIQUE_COUNT:
        return f"uniqExact({text})"
    raise ValueError(f"{meter.aggregation} is not aggregated in SQL")
