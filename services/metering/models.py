"""Metering's request and response shapes (api.md, Metering)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class RejectedEvent(BaseModel):
    index: int
    id: str | None
    code: str
    field: str
    reason: str


class IngestResult(BaseModel):
    accepted: int
    rejected: list[RejectedEvent]


Window = Literal["hour", "day", "month"]


class UsagePoint(BaseModel):
    from_: datetime
    to: datetime
    group: dict[str, str]
    value: Any

    def public(self) -> dict[str, Any]:
        # `from` is a Python keyword: the wire name is set here, once.
        return {"from": self.from_.isoformat(), "to": self.to.isoformat(),
                "group": self.group, "value": self.value}


class EventRef(BaseModel):
    source: str
    id: str
    time: datetime
    partition: int
    offset: int
