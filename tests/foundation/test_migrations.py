"""Numbered migrations: applied once, recorded, and a second run changes nothing."""

from __future__ import annotations

from pathlib import Path

from shared.clickhouse.client import connect
from shared.clickhouse.migrate import applied, discover, migrate
from shared.stack import Endpoints


async def test_migrations_applied_twice_change_nothing(endpoints: Endpoints, tmp_path: Path,
                                                       unique: str) -> None:
    clickhouse = connect(endpoints.clickhouse_dsn)
    group = tmp_path / f"probe_{unique}"
    group.mkdir()
    (group / "0001_create.sql").write_text(
        f"CREATE TABLE IF NOT EXISTS probe_{unique} (x UInt8) ENGINE = MergeTree ORDER BY x;\n")
    (group / "0002_seed.sql").write_text(
        f"-- a data migration: running it twice would double the rows\n"
        f"INSERT INTO probe_{unique} VALUES (1), (2);\n")

    first = await migrate(clickhouse, tmp_path)
    second = await migrate(clickhouse, tmp_path)

    assert [(m.group, m.version) for m in first] == [(f"probe_{unique}", 1),
                                                      (f"probe_{unique}", 2)]
    assert second == []
    assert await clickhouse.rows(f"SELECT count() FROM probe_{unique}") == [(2,)]
    assert {(f"probe_{unique}", 1), (f"probe_{unique}", 2)} <= await applied(clickhouse)


async def test_the_platform_migrations_are_all_recorded(endpoints: Endpoints) -> None:
    clickhouse = connect(endpoints.clickhouse_dsn)
    await migrate(clickhouse)
    recorded = await applied(clickhouse)
    assert {(m.group, m.version) for m in discover()} <= recorded
    assert await migrate(clickhouse) == []
