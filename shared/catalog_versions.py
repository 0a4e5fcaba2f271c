"""Catalog versions (R10.5): every price list ever sold under, loaded and validated at start.

`CATALOG` names one catalog file (one version, as before versions existed) or a directory
holding one file per version (`2026-11.yaml`, `2027-01.yaml`, ...). Files rather than a list in
one file: a published version is never edited again (its tenants are billed by it), so each is
a file of its own that a release adds beside the others and a review reads as a new file;
changing an old price list shows up as a change to an old file. In a directory:

- each file's name (without suffix) is its `version`, so a file copied to start the next
  version and not renamed in its `version` field is caught, not loaded twice;
- versions are ordered by their ids, which are therefore dates (`YYYY-MM` or `YYYY-MM-DD`);
  the last is the current one, that new tenants get at once;
- every file is validated as a catalog on its own, and an error names the version with the
  field (`2027-01: plans.1.price.P1M: ...`); all versions share one currency, since a tenant
  keeps its currency when it migrates.

A tenant document names its `catalog_version`; one written before versions existed names none
and reads as the oldest version, the catalog it was created under (docs/entitlements.md,
"Catalog versions and migrations").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path

from shared.billing.periods import Period
from shared.catalog import Catalog, CatalogError, UnknownCatalogItem, load_catalog
from shared.catalog_usage import check_usage_meters
from shared.subscription import TenantState

__all__ = ["CatalogVersions", "check_versions_meters", "load_catalog_versions"]

_SUFFIXES = (".yaml", ".yml", ".json")
_DATE_ID = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?")
# A directory of versions is read whole at start; more than this is not a price history.
MAX_VERSIONS = 200


class CatalogVersions:
    """The loaded versions, oldest first; the last is the current one (R10.5)."""

    def __init__(self, versions: tuple[Catalog, ...]) -> None:
        if not versions:
            raise ValueError("at least one catalog version")
        self.versions = versions
        self._by_id = {c.version: c for c in versions}

    @property
    def current(self) -> Catalog:
        return self.versions[-1]

    @property
    def oldest(self) -> Catalog:
        return self.versions[0]

    def get(self, version: str) -> Catalog:
        try:
            return self._by_id[version]
        except KeyError:
            raise UnknownCatalogItem("catalog version", version) from None

    def of(self, state: TenantState, instant: datetime) -> Catalog:
        """The catalog a tenant is priced by at `instant`: its pinned version, or the one a
        confirmed migration moves it to once that starts (R10.5)."""
        version = state.catalog_version_at(instant)
        return self.oldest if version is None else self.get(version)

    def of_periods(self, state: TenantState, periods: Sequence[Period]) -> list[Catalog]:
        """`of` at the start of each of `periods`, which each is priced by (R10.5): a tenant
        never migrated has one version throughout, looked up once."""
        if not state.catalog_changes and state.pending_catalog is None:
            return [self.of(state, state.created_at)] * len(periods)
        zone = state.zone
        return [self.of(state, period.start_instant(zone)) for period in periods]

    @property
    def priced_meters(self) -> bool:
        """Whether any version prices a meter (R10.1): billing reads meters only then."""
        return any(plan.usage for catalog in self.versions for plan in catalog.plans)


def load_catalog_versions(path: Path) -> CatalogVersions:
    """Every version under `path` (a file: one version), validated (R1.4, R10.5); raises
    `CatalogError` naming the version and the field."""
    if not path.is_dir():
        return CatalogVersions((load_catalog(path),))
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
    if not files:
        raise CatalogError("catalog", f"{path}: no catalog version (*.yaml, *.yml, *.json)")
    if len(files) > MAX_VERSIONS:
        raise CatalogError("catalog", f"{path}: {len(files)} versions; at most "
                           f"{MAX_VERSIONS}")
    loaded: dict[str, Catalog] = {}
    for file in files:
        stem = file.stem
        if not _DATE_ID.fullmatch(stem):
            raise CatalogError("version", f"{file.name}: a version file is named by its "
                               "version, a date such as 2027-01 or 2027-01-15")
        if stem in loaded:
            raise CatalogError("version", f"{file.name}: version {stem} has two files")
        try:
            catalog = load_catalog(file)
        except CatalogError as exc:
            raise _in_version(stem, exc) from None
        if catalog.version != stem:
            raise CatalogError(f"{stem}: version", f"'{catalog.version}' in {file.name}: "
                               "the file name names the version")
        loaded[stem] = catalog
    ordered = tuple(loaded[v] for v in sorted(loaded))
    for catalog in ordered[1:]:
        if catalog.currency != ordered[0].currency:
            raise CatalogError(f"{catalog.version}: currency", f"{catalog.currency} differs "
                               f"from {ordered[0].version}'s {ordered[0].currency}: tenants "
                               "keep their currency across versions")
    return CatalogVersions(ordered)


def check_versions_meters(catalogs: CatalogVersions, meters: Collection[str]) -> None:
    """Every version's usage charges name a known meter (R10.1)."""
    for_each_version(catalogs, lambda catalog: check_usage_meters(catalog, meters))


def for_each_version(catalogs: CatalogVersions, check: Callable[[Catalog], None]) -> None:
    """`check` on every version; its error names the version when there are several."""
    for catalog in catalogs.versions:
        try:
            check(catalog)
        except CatalogError as exc:
            if len(catalogs.versions) == 1:
                raise
            raise _in_version(catalog.version, exc) from None


def _in_version(version: str, exc: CatalogError) -> CatalogError:
    """The same problems, each field prefixed by the version (`2027-01: plans.1.price`)."""
    return CatalogError(f"{version}: {exc.field}", exc.message,
                        more=tuple((f"{version}: {f}", m) for f, m in exc.problems[1:]))
