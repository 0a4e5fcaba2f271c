"""Webhook endpoints and their delivery logs, as the API asks for them (docs/webhooks.md).

Every method takes the caller's `Principal`: a key limited to a tenant creates, sees,
deletes and retries endpoints of its tenant only; another tenant's, or an endpoint of every
tenant, does not exist for it (404), as elsewhere in the API.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from redis.asyncio import Redis

from services.webhooks.models import (
    DeliveryOut,
    LastResponse,
    WebhookCreated,
    WebhookOut,
    WebhookRequest,
)
from services.webhooks.sender import AddressRefused, vet_host
from services.webhooks.store import Delivery, Endpoint, WebhookStore
from services.webhooks.urls import parse_url
from shared.auth import Principal
from shared.clock import Clock
from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed
from shared.keys import TENANT_ZONES
from shared.settings import WebhooksSettings
from shared.times import micros, utc_text

MAX_LOG_PAGE = 500


def _instant(us: int | None) -> str | None:
    return None if us is None else utc_text(datetime.fromtimestamp(us / 1e6, UTC))


def delivery_view(delivery: Delivery) -> DeliveryOut:
    last = None if delivery.last_us is None else LastResponse(
        status=delivery.last_status, body=delivery.last_body,
        error=delivery.last_error or None)
    return DeliveryOut(
        id=delivery.id, event=delivery.event_id, type=delivery.event_type,
        tenant=delivery.tenant, status=delivery.status,
        attempts=delivery.attempts, created_at=_instant(delivery.created_us) or "",
        last_attempt_at=_instant(delivery.last_us),
        next_attempt_at=_instant(delivery.next_us) if delivery.status == "pending" else None,
        last_response=last)


class WebhooksService:
    def __init__(self, store: WebhookStore, redis: Redis, clock: Clock,
                 settings: WebhooksSettings) -> None:
        self.store = store
        self._redis = redis
        self._clock = clock
        self._settings = settings

    async def create(self, body: WebhookRequest, principal: Principal) -> WebhookCreated:
        await self._check_tenant(body.tenant, principal)
        allow = self._settings.webhooks_allow_http_loopback
        target = parse_url(body.url, allow)
        try:
            await vet_host(target, allow)
        except AddressRefused as refused:
            raise ValidationFailed(f"url: {refused}", field="url", code="invalid_url") from None
        except (OSError, TimeoutError):
            raise ValidationFailed(f"url: {target.host} does not resolve", field="url",
                                   code="invalid_url") from None
        endpoint = Endpoint(id=f"wh-{secrets.token_hex(8)}", url=body.url,
                            events=tuple(body.events), tenant=body.tenant,
                            created_at=utc_text(await self._clock.now()))
        # 24 random bytes, base64 after the prefix: the Standard Webhooks secret format.
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        if not await self.store.create(endpoint, secret, self._settings.webhooks_max_endpoints):
            raise Conflict(f"at most {self._settings.webhooks_max_endpoints} webhook "
                           "endpoints; delete one first", code="too_many_webhooks")
        return WebhookCreated(**endpoint.public(), secret=secret)

    async def _check_tenant(self, tenant: str | None, principal: Principal) -> None:
        if tenant is None:
            if principal.tenant is not None:
                raise Forbidden("a key limited to a tenant creates webhooks for that tenant "
                                "only", field="tenant")
            return
        principal.ensure_tenant(tenant)
        if not await self._redis.hexists(TENANT_ZONES, tenant):
            raise NotFound(f"tenant '{tenant}' not found", field="tenant")

    async def endpoints(self, principal: Principal) -> list[WebhookOut]:
        return [WebhookOut(**e.public()) for e in await self.store.endpoints()
                if principal.may_see(e.tenant)]

    async def visible(self, endpoint_id: str, principal: Principal) -> Endpoint:
        endpoint = await self.store.endpoint(endpoint_id)
        if endpoint is None or not principal.may_see(endpoint.tenant):
            raise NotFound(f"webhook '{endpoint_id}' not found", field="id")
        return endpoint

    async def delete(self, endpoint_id: str, principal: Principal) -> Endpoint:
        endpoint = await self.visible(endpoint_id, principal)
        if not await self.store.delete(endpoint.id):
            raise NotFound(f"webhook '{endpoint_id}' not found", field="id")
        return endpoint

    async def deliveries(self, endpoint_id: str, principal: Principal, limit: int
                         ) -> list[DeliveryOut]:
        endpoint = await self.visible(endpoint_id, principal)
        return [delivery_view(d) for d in await self.store.log(endpoint.id, limit)]

    async def retry(self, endpoint_id: str, delivery_id: str, principal: Principal
                    ) -> DeliveryOut:
        endpoint = await self.visible(endpoint_id, principal)
        delivery = await self.store.delivery(delivery_id)
        if delivery is None or delivery.endpoint != endpoint.id or \
                not await self.store.retry(delivery, micros(await self._clock.now())):
            raise NotFound(f"delivery '{delivery_id}' not found", field="delivery")
        again = await self.store.delivery(delivery_id)
        return delivery_view(again or delivery)
