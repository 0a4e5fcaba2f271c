"""Webhook routes (docs/api.md, "Webhooks"): thin — parse, authorize, delegate. Admin keys
only; a key limited to a tenant manages that tenant's endpoints (service.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from services.webhooks.models import (
    DeliveryList,
    DeliveryOut,
    WebhookCreated,
    WebhookList,
    WebhookRequest,
)
from services.webhooks.service import MAX_LOG_PAGE, WebhooksService
from shared.app import state_of
from shared.audit import audit
from shared.auth import AdminKey
from shared.openapi import errors

router = APIRouter(tags=["webhooks"])

EndpointId = Annotated[str, Path(max_length=64)]
DeliveryId = Annotated[str, Path(max_length=64)]


Webhooks = Annotated[WebhooksService, Depends(state_of("webhooks"))]


@router.post("/v1/webhooks", status_code=201, response_model=WebhookCreated,
             responses=errors(400, 404, 409, 422))
async def create_webhook(body: WebhookRequest, principal: AdminKey,
                         service: Webhooks) -> WebhookCreated:
    """The secret signs every delivery; it is in this answer only."""
    created = await service.create(body, principal)
    # Ids and the event types only: the secret, and the URL (it may carry a token), stay out.
    audit("webhook.create", principal, webhook=created.id, tenant=created.tenant,
          events=created.events)
    return created


@router.get("/v1/webhooks", response_model=WebhookList, responses=errors())
async def list_webhooks(principal: AdminKey, service: Webhooks) -> WebhookList:
    return WebhookList(data=await service.endpoints(principal))


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, responses=errors(404, 422))
async def delete_webhook(webhook_id: EndpointId, principal: AdminKey,
                         service: Webhooks) -> Response:
    endpoint = await service.delete(webhook_id, principal)
    audit("webhook.delete", principal, webhook=endpoint.id, tenant=endpoint.tenant)
    return Response(status_code=204)


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=DeliveryList,
            responses=errors(404, 422))
async def list_deliveries(webhook_id: EndpointId, principal: AdminKey, service: Webhooks,
                          limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = 50
                          ) -> DeliveryList:
    """The endpoint's deliveries, newest first."""
    return DeliveryList(data=await service.deliveries(webhook_id, principal, limit))


@router.post("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", status_code=202,
             response_model=DeliveryOut, responses=errors(404, 422))
async def retry_delivery(webhook_id: EndpointId, delivery_id: DeliveryId,
                         principal: AdminKey, service: Webhooks) -> DeliveryOut:
    """A pending delivery is tried now; a delivered or failed one is queued again (same
    `webhook-id`), behind the tenant's deliveries already queued."""
    delivery = await service.retry(webhook_id, delivery_id, principal)
    audit("webhook.retry", principal, webhook=webhook_id, delivery=delivery_id,
          tenant=delivery.tenant)
    return delivery
