"""The dashboard page: usage charts per meter and module, and the live entitlement state.

The chart reads the metering service's usage series with the parameters `GET /v1/usage`
takes (so it draws the API's numbers); the state panel asks the entitlement checks, in one
batch, what the product would be told right now (R6.3, R7.2–R7.4, R8.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response

from services.console.charts import SPANS, usage_chart, usage_range
from services.console.web import (
    READ_TENANT,
    READ_USAGE,
    Services,
    Viewer,
    page,
    render,
    services_of,
    signed_in,
)
from services.entitlements.models import CheckItem
from shared.errors import NotFound, ValidationFailed
from shared.times import zone

router = APIRouter()
NEXT_USER = "next user"


@dataclass(frozen=True, slots=True)
class Allowance:
    """One line of the state panel: how much of what the tenant has is used."""

    what: str
    used: int | None
    limit: int | None
    remaining: int | None
    decision: str
    reason: str


def _choice(request: Request, name: str, allowed: list[str], default: str) -> str:
    value = request.query_params.get(name) or default
    if value not in allowed:
        raise ValidationFailed(f"{name}: one of {', '.join(allowed)}", field=name)
    return value


@router.get("/tenants/{tenant}/usage")
@page
async def usage_page(request: Request, tenant: str) -> Response:
    viewer = await signed_in(request, READ_TENANT)
    viewer.see_tenant(tenant)
    services = services_of(request)
    doc = await services.entitlements.get_tenant(tenant)
    window = _choice(request, "window", list(SPANS), "day")
    meters = [m.slug for m in services.metering.registry.all()]
    meter = _choice(request, "meter", meters, "emails_sent" if "emails_sent" in meters
                    else meters[0])
    module = _choice(request, "module", ["", *doc["modules"]], "") or None
    chart = None
    if viewer.may(READ_USAGE):
        chart = await _chart(services, tenant, doc["time_zone"], meter, window, module)
    return render(request, "usage.html", viewer, tenant=tenant, doc=doc, meters=meters,
                  meter=meter, window=window, windows=list(SPANS), module=module,
                  chart=chart, state=await _state(services, viewer, doc))


async def _chart(services: Services, tenant: str, tz: str, meter: str, window: str,
                 module: str | None) -> Any:
    definition = services.metering.registry.get(meter)
    if definition is None:
        raise NotFound(f"meter '{meter}' not found", field="meter")
    tenant_zone = zone(tz)
    start, end = usage_range(window, await services.entitlements.clock.now(), tenant_zone)
    group = "module" if "module" in definition.group_by else None
    points = await services.metering.usage(tenant, meter, start, end, window, tz,
                                           [group] if group else [], module)
    return usage_chart(points, start, end, window, tenant_zone, group)


async def _state(services: Services, viewer: Viewer, doc: dict[str, Any]
                 ) -> tuple[list[Allowance], dict[str, Any] | None]:
    """Seats per module (capacity and extra users, R6.2), e-mails of the allowance (R7.2),
    companies and counted resources of their limits (R7.3, R7.4); and the support pools."""
    tenant = doc["id"]
    checks = services.entitlements.checks
    # The next user given a module: a user id no product gives (it has a space), so the
    # decision says what one more extra user would be (seat pack, billable or denied).
    asked: list[tuple[str, CheckItem]] = [
        (f"seats · {m}", CheckItem(tenant=tenant, module=m, user=NEXT_USER))
        for m in doc["modules"]]
    asked += [(f, CheckItem(tenant=tenant, feature=f))
              for f in ("emails", "companies", *sorted(checks.index.resources))]
    asked.append(("support", CheckItem(tenant=tenant, feature="support")))
    results = await checks.check_batch([item for _, item in asked], viewer.principal)
    rows = [Allowance(what, r.get("used"), r.get("limit"), r.get("remaining"),
                      str(r.get("decision", "")), str(r.get("reason", "")))
            for (what, _), r in zip(asked[:-1], results[:-1], strict=True)
            if "error" not in r]
    return rows, results[-1].get("support")
