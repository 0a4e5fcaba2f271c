"""The webhooks API's bodies and answers (docs/api.md, "Webhooks"), every field bounded."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.webhooks.urls import MAX_URL_CHARS

MAX_EVENT_TYPES = 32
EventType = Annotated[str, StringConstraints(
    pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=64)]
TenantRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]

_ENDPOINT_EXAMPLE: dict[str, Any] = {"id": "wh-5f2c9a0d1e3b4c7a", "url": "https://crm.example.com/hooks",
                     "events": ["invoice.issued", "purchase.confirmed"], "tenant": None,
                     "created_at": "2026-03-20T10:00:00Z"}


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://crm.example.com/hooks", "events": ["invoice.issued"],
         "tenant": None}]})
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    events: list[EventType] = Field(min_length=1, max_length=MAX_EVENT_TYPES,
                                    description="the subscription-events types to deliver")
    tenant: TenantRef | None = Field(default=None,
                                     description="deliver this tenant's events only")

    @field_validator("events")
    @classmethod
    def _once_each(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))


class WebhookOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_ENDPOINT_EXAMPLE]})
    id: str
    url: str
    events: list[str]
    tenant: str | None
    created_at: str


class WebhookCreated(WebhookOut):
    """The endpoint, with its signing secret: shown in this answer only."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**_ENDPOINT_EXAMPLE, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]})
    secret: str


class WebhookList(BaseModel):
    data: list[WebhookOut]


class LastResponse(BaseModel):
    status: int | None = Field(description="the receiver's HTTP status; null without answer")
    body: str = Field(description="the first KiB of its answer")
    error: str | None = Field(description="why there was no answer (timeout, refused, …)")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "msg_3b1f0c8e2a7d4e5f9a6b1c2d3e4f5a6b", "event": "0b6f5c1e-…",
         "type": "invoice.issued", "tenant": "acme", "status": "pending", "attempts": 2,
         "created_at": "2026-03-20T10:00:00Z", "last_attempt_at": "2026-03-20T10:00:05Z",
         "next_attempt_at": "2026-03-20T10:00:15Z",
         "last_response": {"status": 503, "body": "busy", "error": None}}]})
    id: str = Field(description="the delivery id, sent as `webhook-id`")
    event: str = Field(description="the event's `id`")
    type: str
    tenant: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: str
    last_attempt_at: str | None
    next_attempt_at: str | None
    last_response: LastResponse | None


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
