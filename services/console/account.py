"""The tenant admin pages: the subscription, its renewal switch and lots, the purchase journey
(choose items, preview, confirm) and the dated history.

Changes go through the entitlement service's own methods with the signed-in key as principal
and the product user named in the form as actor, so R5 decides exactly as it does for
`POST /v1/tenants/{tenant}/purchases`; each change is audited as the API audits it."""

from __future__ import annotations

from typing import Any, get_args

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from services.console.sessions import new_token
from services.console.web import (
    CHANGE_TENANT,
    READ_HISTORY,
    READ_TENANT,
    Viewer,
    bounded_int,
    invalid,
    page,
    posted_form,
    render,
    services_of,
    signed_in,
)
from services.entitlements.api import purchase_ids
from services.entitlements.models import (
    MAX_ITEMS,
    Action,
    PurchaseItem,
    PurchaseRequest,
    TenantPatch,
)
from services.entitlements.policy import ACTION_TEXT, check_role
from shared.audit import audit
from shared.errors import AppError, ValidationFailed
from shared.subscription import Actor, ActorRole

router = APIRouter()

ACTOR_ROLES: tuple[str, ...] = get_args(ActorRole)
ACTIONS: tuple[str, ...] = tuple(a for a in get_args(Action) if a != "renew")
# Rows of item pickers the purchase form offers (R4.11 allows up to MAX_ITEMS).
ITEM_ROWS = min(3, MAX_ITEMS)


def _allowed(role: str, action: str) -> bool:
    try:
        check_role(action, Actor.model_validate({"user_id": "who", "role": role}))
    except AppError:
        return False
    return True


# R5, as the rules decide it: which product role may take which purchase action.
R5_TABLE = [(role, [_allowed(role, action) for action in ACTIONS]) for role in ACTOR_ROLES]


def _actor(fields: dict[str, str]) -> Actor:
    return Actor.model_validate({"user_id": fields.get("actor_user", "").strip(),
                                 "role": fields.get("actor_role", "")})


@router.get("/tenants/{tenant}/subscription")
@page
async def subscription(request: Request, tenant: str) -> Response:
    viewer = await signed_in(request, READ_TENANT)
    viewer.see_tenant(tenant)
    return await _subscription_page(request, viewer, tenant)


async def _subscription_page(request: Request, viewer: Viewer, tenant: str,
                             status: int = 200, **extra: Any) -> Response:
    services = services_of(request)
    doc = await services.entitlements.get_tenant(tenant)
    history = None
    if viewer.may(READ_HISTORY):
        cursor = request.query_params.get("cursor")
        history = await services.entitlements.history(tenant, cursor, 50)
    catalog = services.entitlements.catalog
    items = [p.id for p in catalog.plans] + [p.id for p in catalog.packs]
    context: dict[str, Any] = {"problem": None, "preview": None, "done": None,
                               "form": {"actor_user": doc["admin_user"],
                                        "actor_role": "owner", "action": "buy"}}
    context.update(extra)
    return render(request, "subscription.html", viewer, status=status, tenant=tenant, doc=doc,
                  history=history, items=items, item_rows=range(ITEM_ROWS),
                  may_change=viewer.may(CHANGE_TENANT), actions=ACTIONS,
                  action_text=ACTION_TEXT, roles=ACTOR_ROLES, r5=R5_TABLE, **context)


@router.post("/tenants/{tenant}/renewal")
@page
async def renewal(request: Request, tenant: str) -> Response:
    viewer = await signed_in(request, CHANGE_TENANT)
    viewer.see_tenant(tenant)
    fields = await posted_form(request, viewer)
    body = TenantPatch(renewal=fields.get("renewal") == "on", actor=_actor(fields))
    await services_of(request).entitlements.patch_tenant(tenant, body, viewer.principal)
    audit("tenant.patch", viewer.principal, actor=body.actor, tenant=tenant,
          fields=["renewal"])
    return RedirectResponse(f"/console/tenants/{tenant}/subscription", status_code=303)


@router.post("/tenants/{tenant}/lots/{lot}/{change}")
@page
async def lot_change(request: Request, tenant: str, lot: str, change: str) -> Response:
    """R4.4: cancel a whole lot at the period end, or undo it."""
    viewer = await signed_in(request, CHANGE_TENANT)
    viewer.see_tenant(tenant)
    if change not in ("cancel", "uncancel"):
        raise ValidationFailed("change: cancel or uncancel", field="change")
    fields = await posted_form(request, viewer)
    actor = _actor(fields)
    await services_of(request).entitlements.cancel_lot(tenant, lot, change == "uncancel",
                                                       actor, viewer.principal)
    audit(f"lot.{change}", viewer.principal, actor=actor, tenant=tenant, lot=lot)
    return RedirectResponse(f"/console/tenants/{tenant}/subscription", status_code=303)


def purchase_request(fields: dict[str, str], confirm: bool) -> PurchaseRequest:
    """The form's items as the API's body: one item alone, several as `items` (R4.11)."""
    chosen = []
    for row in range(ITEM_ROWS):
        item = fields.get(f"item_{row}", "").strip()
        if item:
            quantity = bounded_int(fields, f"quantity_{row}", high=1_000_000)
            chosen.append(PurchaseItem(item=item, quantity=quantity))
    if not chosen:
        raise ValidationFailed("item_0: choose at least one item", field="item_0")
    action = fields.get("action", "buy")
    if action not in ACTIONS:
        raise ValidationFailed(f"action: one of {', '.join(ACTIONS)}", field="action")
    common: dict[str, Any] = {"actor": _actor(fields), "action": action, "confirm": confirm}
    if len(chosen) == 1:
        return PurchaseRequest(item=chosen[0].item, quantity=chosen[0].quantity, **common)
    return PurchaseRequest(items=chosen, **common)


@router.post("/tenants/{tenant}/purchase")
@page
async def purchase(request: Request, tenant: str) -> Response:
    """Preview (nothing changes, R4.3), then confirm with the Idempotency-Key the preview
    handed out, so a double click or a resent form buys once."""
    viewer = await signed_in(request, CHANGE_TENANT)
    viewer.see_tenant(tenant)
    fields = await posted_form(request, viewer)
    confirm = fields.get("step") == "confirm"
    form = {k: v for k, v in fields.items() if k != "csrf"}
    try:
        body = purchase_request(fields, confirm)
        idempotency = (fields.get("idempotency_key") or None) if confirm else None
        _, answer = await services_of(request).entitlements.purchase(
            tenant, body, viewer.principal, idempotency)
    except (AppError, ValidationError) as refused:
        error = invalid(refused) if isinstance(refused, ValidationError) else refused
        return await _subscription_page(request, viewer, tenant, status=error.status,
                                        problem=error.message, form=form)
    if not confirm:
        form["idempotency_key"] = new_token()
        return await _subscription_page(request, viewer, tenant, preview=answer, form=form)
    audit("purchase", viewer.principal, actor=body.actor, tenant=tenant, kind=body.action,
          **purchase_ids(answer))
    return await _subscription_page(request, viewer, tenant, done=answer, form=form)
