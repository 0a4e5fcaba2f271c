"""Metering's response shapes (docs/api.md, Metering), published in the OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.meters import Meter

Window = Literal["hour", "day", "month"]


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
