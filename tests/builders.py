"""Tenant documents built in memory for unit tests (no I/O): a tenant of the demo shape, with
the lots and fields a test names."""

from __future__ import annotations

from typing import Any

from shared.subscription import TenantState


def tenant_document(*lots: dict[str, Any], **fields: Any) -> TenantState:
    """acme on essentials, monthly from 1 March 2026 in Paris, VAT 20 %, admin `u-admin`;
    `fields` override any of it (an anchor, a plan, a status…)."""
    document: dict[str, Any] = {
        "id": "acme", "plan": "essentials", "cycle": "P1M", "anchor": "2026-03-01",
        "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
        "admin_user": "u-admin", "created_at": "2026-02-20T10:00:00Z", "lots": list(lots)}
    document.update(fields)
    return TenantState.model_validate(document)
