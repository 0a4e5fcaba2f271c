"""Catalog versions loaded at start (R1.4, R10.5): a directory of version files, ordered by
version, the last current; a bad version stops the start naming the version and the field.

Each bad definition (unsorted tiers, a tier after an open-ended one, a
negative price, an unknown meter, a package size of 0) is put in the second of two versions,
and the parts the platform starts are constructed as `make run` constructs them: the start
stops with an error naming `2027-02: <field>`.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.entitlements.part import EntitlementsPart
from services.invoicing.part import InvoicingPart
from services.metering.part import MeteringPart
from shared.billing.periods import Period
from shared.catalog import CatalogError
from shared.catalog_versions import load_catalog_versions
from shared.settings import CommonSettings
from shared.subscription import TenantState

DEMO: dict[str, Any] = yaml.safe_load(
    Path(CommonSettings.model_fields["catalog"].default).read_text(encoding="utf-8"))
PROFESSIONAL = next(i for i, p in enumerate(DEMO["plans"]) if p["id"] == "professional")
CHARGE = f"plans.{PROFESSIONAL}.usage.0"


def version(directory: Path, name: str, change: Any = None, *, file: str | None = None,
            **fields: Any) -> None:
    """The demo catalog as version `name`, changed by `change(raw)` and `fields`."""
    raw = copy.deepcopy(DEMO) | {"version": name} | fields
    if change is not None:
        change(raw)
    (directory / (file or f"{name}.yaml")).write_text(yaml.safe_dump(raw, sort_keys=False),
                                                      encoding="utf-8")


def start_parts(catalog: Path) -> None:
    """The parts constructed in the order the platform starts them."""
    for part in (MeteringPart, EntitlementsPart, InvoicingPart):
        part({"catalog": catalog})


def charge(raw: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = raw["plans"][PROFESSIONAL]["usage"][0]
    return found


def test_a_directory_loads_every_version_oldest_first_the_last_current(
        tmp_path: Path) -> None:
    for name in ("2027-01", "2026-11", "2027-01-15"):
        version(tmp_path, name)
    (tmp_path / "README.txt").write_text("not a version", encoding="utf-8")
    catalogs = load_catalog_versions(tmp_path)
    assert [c.version for c in catalogs.versions] == ["2026-11", "2027-01", "2027-01-15"]
    assert catalogs.current.version == "2027-01-15"
    assert catalogs.get("2027-01").version == "2027-01"
    # A document written before versions names none: the oldest, the one it was created under.
    legacy = TenantState.model_validate({
        "schema_version": 1, "id": "t", "plan": "essentials", "cycle": "P1M",
        "anchor": "2026-03-01", "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20",
        "admin_user": "u", "created_at": "2026-03-01T00:00:00Z"})
    assert catalogs.of(legacy, datetime(2027, 6, 1, tzinfo=UTC)).version == "2026-11"


def test_each_period_gets_the_version_in_force_at_its_start(tmp_path: Path) -> None:
    """R10.5, `of_periods`: a tenant never migrated is on its pinned version throughout;
    one that left 2026-11 for 2027-01 on 1 March 2027 and has a migration to 2027-01-15
    confirmed for 1 May 2027 is on 2026-11 in February, 2027-01 in March and April,
    2027-01-15 from May (monthly periods, UTC)."""
    for name in ("2026-11", "2027-01", "2027-01-15"):
        version(tmp_path, name)
    catalogs = load_catalog_versions(tmp_path)
    fields = {"id": "t", "plan": "essentials", "cycle": "P1M", "anchor": "2027-01-01",
              "time_zone": "UTC", "currency": "EUR", "vat_rate": "0.20", "admin_user": "u",
              "created_at": "2027-01-01T00:00:00Z"}
    months = [Period(date(2027, month, 1), date(2027, month + 1, 1)) for month in range(2, 7)]
    pinned = TenantState.model_validate(fields | {"catalog_version": "2027-01"})
    assert [c.version for c in catalogs.of_periods(pinned, months)] == ["2027-01"] * 5
    migrated = TenantState.model_validate(fields | {
        "catalog_version": "2027-01",
        "catalog_changes": [{"at": "2027-03-01T00:00:00Z", "previous": "2026-11"}],
        "pending_catalog": "2027-01-15", "pending_catalog_at": "2027-05-01T00:00:00Z"})
    assert [c.version for c in catalogs.of_periods(migrated, months)] == [
        "2026-11", "2027-01", "2027-01", "2027-01-15", "2027-01-15"]
    assert catalogs.of_periods(pinned, []) == []


def test_a_single_file_is_one_version(tmp_path: Path) -> None:
    version(tmp_path, "anything-goes", file="catalog.yaml")
    catalogs = load_catalog_versions(tmp_path / "catalog.yaml")
    assert catalogs.current is catalogs.oldest
    assert catalogs.current.version == "anything-goes"


@pytest.mark.parametrize(("files", "field", "words"), [
    ([("2027-01", "2027-02.yaml")], "2027-02: version", "the file name names the version"),
    ([("2027-01", "latest.yaml")], "version", "named by its version"),
    ([("2026-11", None), ("2027-01", None, {"currency": "USD"})], "2027-01: currency",
     "keep their currency"),
    ([], "catalog", "no catalog version"),
])
def test_a_badly_named_or_inconsistent_version_stops_the_start(
        tmp_path: Path, files: list[tuple[Any, ...]], field: str, words: str) -> None:
    for name, file, *fields in files:
        version(tmp_path, name, file=file, **(fields[0] if fields else {}))
    with pytest.raises(CatalogError) as stopped:
        EntitlementsPart({"catalog": tmp_path})
    assert stopped.value.field == field
    assert words in stopped.value.message


def _unsorted(raw: dict[str, Any]) -> None:
    charge(raw)["tiers"] = [{"up_to": "100000", "unit_price": "0.002"},
                            {"up_to": "50000", "unit_price": "0.001"},
                            {"up_to": None, "unit_price": "0.001"}]


def _after_open_ended(raw: dict[str, Any]) -> None:
    charge(raw)["tiers"] = [{"up_to": None, "unit_price": "0.002"},
                            {"up_to": "100000", "unit_price": "0.001"}]


def _negative_price(raw: dict[str, Any]) -> None:
    charge(raw)["tiers"][0]["unit_price"] = "-0.002"


def _unknown_meter(raw: dict[str, Any]) -> None:
    charge(raw)["meter"] = "api_cals"


def _package_of_zero(raw: dict[str, Any]) -> None:
    raw["plans"][PROFESSIONAL]["usage"][0] = {
        "meter": "api_calls", "model": "package", "package_size": "0", "package_price": "5"}


@pytest.mark.parametrize(("defect", "field"), [
    (_unsorted, f"2027-02: {CHARGE}.tiers.1.up_to"),
    (_after_open_ended, f"2027-02: {CHARGE}.tiers.1"),
    (_negative_price, f"2027-02: {CHARGE}.tiers.0.unit_price"),
    (_unknown_meter, f"2027-02: {CHARGE}.meter"),
    (_package_of_zero, f"2027-02: {CHARGE}.package_size"),
])
def test_a_bad_definition_in_any_version_stops_the_start_naming_it(
        tmp_path: Path, defect: Any, field: str) -> None:
    version(tmp_path, "2026-11")
    version(tmp_path, "2027-02", defect)
    with pytest.raises(CatalogError) as stopped:
        start_parts(tmp_path)
    assert field in [f for f, _ in stopped.value.problems]
    assert str(stopped.value).startswith("2027-02: ")
