"""Metering's response shapes (docs/api.md, Metering), published in the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.meters import Meter

Window = Literal["hour", "day", "month"]


class CloudEvent(BaseModel):
    """A usage event as `POST /v1/events` takes it (docs/events.md): a CloudEvent 1.0 whose
    `subject` is the tenant. Documentation only: the route parses the raw body itself."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "specversion": "1.0", "id": "evt-1", "source": "crm-backend", "type": "email.sent",
        "subject": "acme", "time": "2026-11-01T09:30:00Z",
        "data": {"count": 1250, "campaign_id": "c-7"}}]})
    specversion: Literal["1.0"]
    id: str
    source: str
    type: str = Field(examples=["user.access.granted", "email.sent", "company.created"])
    subject: str = Field(description="the tenant")
    time: str = Field(description="RFC 3339 with an offset")
    data: dict[str, Any]


class RejectedEvent(BaseModel):
    index: int
    id: str | None
    code: str
    field: str
    reason: str


class IngestResult(BaseModel):
    accepted: int
    rejected: list[RejectedEvent]


class UsagePoint(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="window start, RFC 3339 in the caller's zone")
    to: str
    group: dict[str, str]
    value: int | float


class UsageSeries(BaseModel):
    tenant: str
    meter: str
    window: Window | None
    tz: str
    data: list[UsagePoint]


class EventRef(BaseModel):
    source: str
    id: str
    time: str
    topic: str
    partition: int
    offset: int


class EventRefs(BaseModel):
    tenant: str
    meter: str
    data: list[EventRef]


class Meters(BaseModel):
    data: list[Meter]
