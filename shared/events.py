"""The usage-event contract (docs/events.md): CloudEvents 1.0 envelope and typed data per type.

Validation is hand-written rather than a pydantic model: it runs for every event on the
ingest hot path, and each failure must name the offending field for the DLQ headers and the
HTTP 4xx. Unknown envelope attributes are kept (docs/events.md), never rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

import orjson

from shared.errors import ValidationFailed
from shared.times import parse_instant

SPEC_VERSION: Final = "1.0"
MAX_ID_LENGTH: Final = 256
# docs/events.md: counts and minutes are whole numbers in [1, 10^9]. A batch of live-counter
# updates then sums far below 2^53, exact even in valkey's Lua doubles.
MAX_QUANTITY: Final = 10**9
# Nesting of `data` and extension attributes: deep enough for any real payload, far below
# the depth where JSON encoders refuse a document (orjson stops at 255).
MAX_DEPTH: Final = 32

USER_ACCESS_GRANTED: Final = "user.access.granted"
USER_ACCESS_REVOKED: Final = "user.access.revoked"
EMAIL_SENT: Final = "email.sent"
COMPANY_CREATED: Final = "company.created"
COMPANY_DELETED: Final = "company.deleted"
SUPPORT_SESSION_COMPLETED: Final = "support.session.completed"

_NO_EXTENSIONS: Final[Mapping[str, Any]] = MappingProxyType({})
_ENVELOPE: Final = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "data", "datacontenttype"})


class InvalidEvent(ValueError):
    """Why an event cannot be accepted; `code` and `field` go to DLQ headers and 4xx bodies."""

    def __init__(self, code: str, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.code = code
        self.field = field
        self.reason = reason


@dataclass(slots=True)  # not frozen: built per event on the hot path, where frozen costs 2.5x
class UsageEvent:
    id: str
    source: str
    type: str
    tenant: str
    time: datetime  # UTC
    data: Mapping[str, Any]
    extensions: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        """`(source, id)` identifies an event (docs/events.md)."""
        return self.source, self.id


# --- typed data, one checker per type of docs/events.md ------------------------------------

def _text(data: Mapping[str, Any], name: str, *, required: bool = True) -> None:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", f"data.{name}", "is required")
        return
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent("invalid_field", f"data.{name}", "must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent("invalid_field", f"data.{name}", f"longer than {MAX_ID_LENGTH}")


def _positive_int(data: Mapping[str, Any], name: str) -> None:
    value = data.get(name)
    if value is None:
        raise InvalidEvent("missing_field", f"data.{name}", "is required")
    # bool is an int in Python; JSON true is not a count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEvent("invalid_field", f"data.{name}", "must be an integer")
    if not 1 <= value <= MAX_QUANTITY:
        raise InvalidEvent("invalid_field", f"data.{name}", f"must be from 1 to {MAX_QUANTITY}")


def _user_access(data: Mapping[str, Any]) -> None:
    _text(data, "user_id")
    _text(data, "module")


def _email_sent(data: Mapping[str, Any]) -> None:
    _positive_int(data, "count")
    _text(data, "campaign_id", required=False)


def _company(data: Mapping[str, Any]) -> None:
    _text(data, "company_id")


def _support_session(data: Mapping[str, Any]) -> None:
    _positive_int(data, "minutes")
    level = data.get("level")
    if level is None:
        raise InvalidEvent("missing_field", "data.level", "is required")
    if isinstance(level, bool) or level not in (1, 2, 3):
        raise InvalidEvent("invalid_field", "data.level", "must be 1, 2 or 3")
    _text(data, "user_id", required=False)


DataChecker = Callable[[Mapping[str, Any]], None]


def both_checks(first: DataChecker | None, second: DataChecker) -> DataChecker:
    """`first` then `second` (just `second` without a first): the checks of one event type
    that several declarations (meters, counted resources) add to."""
    if first is None:
        return second

    def check(data: Mapping[str, Any]) -> None:
        first(data)
        second(data)

    return check


def resource_checker(key: str) -> DataChecker:
    """The events of a counted resource the catalog declares (R7.4): `data[key]` names the
    instance, a non-empty string like the built-in ids, so a set member stays bounded."""
    def check(data: Mapping[str, Any]) -> None:
        _text(data, key)

    return check

BUILTIN_TYPES: Final[Mapping[str, DataChecker]] = {
    USER_ACCESS_GRANTED: _user_access,
    USER_ACCESS_REVOKED: _user_access,
    EMAIL_SENT: _email_sent,
    COMPANY_CREATED: _company,
    COMPANY_DELETED: _company,
    SUPPORT_SESSION_COMPLETED: _support_session,
}


# --- envelope ----------------------------------------------------------------------------

def _attribute(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidEvent("missing_field", name, "is required")
    if not isinstance(value, str) or not value or value.isspace():
        raise InvalidEvent("invalid_field", name, "must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent("invalid_field", name, f"longer than {MAX_ID_LENGTH} characters")
    return value


def parse_time(value: Any, field: str = "time") -> datetime:
    try:
        return parse_instant(value, field)
    except ValidationFailed as error:
        reason = error.message.removeprefix(f"{field}: ")
        raise InvalidEvent("invalid_field", field, reason) from None


def _depth_within(value: Any, field: str, depth: int = 1) -> None:
    if depth > MAX_DEPTH:
        raise InvalidEvent("too_deep", field, f"nested more than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, dict | list):
                _depth_within(item, field, depth + 1)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                _depth_within(item, field, depth + 1)


class EventValidator:
    """Checks envelopes and data against the built-in types plus the configured meters' types."""

    def __init__(self, extra_types: Mapping[str, DataChecker] | None = None) -> None:
        self._types: dict[str, DataChecker] = dict(BUILTIN_TYPES)
        self._types.update(extra_types or {})

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._types)

    def decode(self, raw: bytes) -> UsageEvent:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidEvent("invalid_json", "body", "is not UTF-8 JSON") from None
        return self.validate(body)

    def validate(self, body: Any) -> UsageEvent:
        if not isinstance(body, dict):
            raise InvalidEvent("not_an_object", "body", "an event must be a JSON object")
        if body.get("specversion") != SPEC_VERSION:
            raise InvalidEvent("not_cloudevents", "specversion", "must be \"1.0\" (CloudEvents)")
        event_id = _attribute(body, "id")
        source = _attribute(body, "source")
        event_type = _attribute(body, "type")
        tenant = _attribute(body, "subject")
        if "time" not in body:
            raise InvalidEvent("missing_field", "time", "is required")
        time = parse_time(body["time"])
        checker = self._types.get(event_type)
        if checker is None:
            raise InvalidEvent("unknown_type", "type", f"unknown event type '{event_type}'")
        data = body.get("data")
        if not isinstance(data, dict):
            raise InvalidEvent("invalid_field", "data", "must be a JSON object")
        checker(data)
        _depth_within(data, "data")
        extra = body.keys() - _ENVELOPE
        extensions = {k: body[k] for k in extra} if extra else _NO_EXTENSIONS
        for name, value in extensions.items():
            if isinstance(value, dict | list):
                _depth_within(value, name)
        return UsageEvent(id=event_id, source=source, type=event_type, tenant=tenant, time=time,
                          data=data, extensions=extensions)
