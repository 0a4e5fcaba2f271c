"""Numbered SQL migrations, applied in order, once each, recorded in `schema_migrations`.

Files live in `migrations/<group>/NNNN_name.sql`, statements ending with `;` (so no `;` inside
a statement). Every statement is itself idempotent (`IF NOT EXISTS`), so a run
interrupted between a statement and its record is safe to run again.

    python -m shared.clickhouse.migrate   # applies everything pending to CLICKHOUSE_DSN
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from shared.clickhouse.client import ClickHouse, connect

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    group String,
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY (group, version)
"""


@dataclass(frozen=True)
class Migration:
    group: str
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        text = "\n".join(line for line in self.path.read_text().splitlines()
                         if not line.lstrip().startswith("--"))
        return [s.strip() for s in text.split(";") if s.strip()]


def discover(root: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(root.glob("*/[0-9][0-9][0-9][0-9]_*.sql")):
        version, _, name = path.stem.partition("_")
        found.append(Migration(path.parent.name, int(version), name, path))
    # Groups are independent; within one the numbers give the order.
    return sorted(found, key=lambda m: (m.group, m.version))


async def applied(clickhouse: ClickHouse) -> set[tuple[str, int]]:
    rows = await clickhouse.rows("SELECT group, version FROM schema_migrations FINAL")
    return {(str(g), int(v)) for g, v in rows}


async def migrate(clickhouse: ClickHouse, root: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply what is pending; returns what was applied (empty on a second run)."""
    await clickhouse.command(_BOOKKEEPING)
    done = await applied(clickhouse)
    newly = []
    for migration in discover(root):
        if (migration.group, migration.version) in done:
            continue
        for statement in migration.statements():
            await clickhouse.command(statement)
        await clickhouse.insert_columns(
            "schema_migrations", ["group", "version", "name"],
            [[migration.group], [migration.version], [migration.name]])
        log.info("applied migration %s/%04d_%s", migration.group, migration.version,
                 migration.name)
        newly.append(migration)
    return newly


def main() -> None:
    from shared.settings import CommonSettings

    settings = CommonSettings()
    clickhouse = connect(settings.clickhouse_dsn)
    try:
        applied_now = asyncio.run(migrate(clickhouse))
        print(f"{len(applied_now)} migration(s) applied")
    finally:
        clickhouse.close()


if __name__ == "__main__":
    main()
