"""Tenant documents and a small catalog built in memory for unit tests (no I/O): a tenant of
the demo shape, with the lots and fields a test names, and a catalog whose plans differ in
modules, suites and features, for the rules that depend on those. And, written to a test's
folder for the platform to load, the demo catalog with plans of the test's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.settings import CommonSettings
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


def people_catalog() -> dict[str, Any]:
    """A catalog, as parsed data: essentials (rank 1, crm, 49.00 a month) and business
    (rank 2, crm and hr, 99.00 a month or 990.00 a year, the `analytics` feature
    included); the `people` suite is hr and payroll, which no plan holds whole. Packs: seats
    of crm (10.00), of hr (12.00) and of the suite (15.00); `analytics` (30.00,
    single-instance) and `exports` (5.00, the same feature, not single-instance); the
    `vip` support plan (1450.00 a year), sold to business only."""
    return {
        "version": "2026-11", "currency": "EUR",
        "modules": [*({"id": m, "extra_users": "deny"} for m in ("crm", "hr", "payroll")),
                    {"id": "support", "extra_users": "deny",
                     "support_price_per_hour": "120.00"}],
        "suites": [{"id": "people", "modules": ["hr", "payroll"]}],
        "plans": [
            {"id": "essentials", "rank": 1, "modules": ["crm"], "price": {"P1M": "49.00"},
             "companies": 1, "contacts": 100},
            {"id": "business", "rank": 2, "modules": ["crm", "hr"],
             "price": {"P1M": "99.00", "P1Y": "990.00"}, "companies": 3, "contacts": 100,
             "features": ["analytics"]}],
        "packs": [
            {"id": "seats-crm", "kind": "seats", "module": "crm", "price": {"P1M": "10.00"}},
            {"id": "seats-hr", "kind": "seats", "module": "hr", "price": {"P1M": "12.00"}},
            {"id": "seats-people", "kind": "seats", "suite": "people",
             "price": {"P1M": "15.00"}},
            {"id": "analytics", "kind": "feature", "feature": "analytics",
             "price": {"P1M": "30.00"}, "single_instance": True},
            {"id": "exports", "kind": "feature", "feature": "analytics",
             "price": {"P1M": "5.00"}},
            {"id": "vip", "kind": "support", "module": "support", "price": {"P1Y": "1450.00"},
             "single_instance": True, "eligible_plans": ["business"],
             "support": {"type": "bank", "hours_per_year": "20",
                         "overage_price_per_hour": "90.00", "covers_level_3": True}}]}


def demo_catalog_with(folder: Path, plans: list[dict[str, Any]], meters: str
                      ) -> tuple[Path, Path]:
    """The demo catalog plus `plans`, and a meters file of `meters` (YAML), written to
    `folder`: the `CATALOG` and `METERS` settings of a platform the test starts."""
    demo = CommonSettings.model_fields["catalog"].default
    raw: dict[str, Any] = yaml.safe_load(Path(demo).read_text(encoding="utf-8"))
    raw["plans"].extend(plans)
    catalog = folder / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    meters_file = folder / "meters.yaml"
    meters_file.write_text(meters, encoding="utf-8")
    return catalog, meters_file
