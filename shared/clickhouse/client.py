"""One ClickHouse client per process, from a DSN, called off the event loop.

`chdb:///abs/path` opens the embedded engine (one per process and path: the embedded mode
shares this client between the services); `http://user:pass@host:8123/db` talks to a server
with the same SQL. The driver is synchronous, so every call runs in a worker thread. chDB
is not safe for concurrent calls, so it gets a single thread; a server gets a small pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import clickhouse_connect
import orjson

_EMBEDDED: dict[str, ClickHouse] = {}


def connect(dsn: str) -> ClickHouse:
    """A client for the DSN. chDB allows one engine per process, so every caller in a
    process shares one embedded client; it lives as long as the process."""
    if not dsn.startswith("chdb:"):
        return ClickHouse(dsn)
    client = _EMBEDDED.get(dsn)
    if client is None:
        client = _EMBEDDED[dsn] = ClickHouse(dsn)
    return client


class ClickHouse:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.embedded = dsn.startswith("chdb:")
        self._executor = ThreadPoolExecutor(max_workers=1 if self.embedded else 4,
                                            thread_name_prefix="clickhouse")
        settings: dict[str, Any] = {}
        if not self.embedded:
            # Concurrent queries on one HTTP session are refused ("session is locked").
            settings["autogenerate_session_id"] = False
        self._client = clickhouse_connect.get_client(dsn=dsn, **settings)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return await self._call(self._client.command, sql, parameters=parameters)

    async def rows(self, sql: str,
                   parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result = await self._call(self._client.query, sql, parameters=parameters)
        return [tuple(row) for row in result.result_rows]

    async def json_columns(self, sql: str, parameters: dict[str, Any] | None = None
                           ) -> list[list[Any]]:
        """The result's columns (none without rows) as JSON values: read in the
        `JSONCompactColumns` format and parsed by orjson, where `rows` converts every value
        in Python (for tens of thousands of rows, several times slower). JSON has no
        decimals: a query reads them with `toString`; dates come as `YYYY-MM-DD`. Parameters
        are bound by the engine, as for `rows`."""
        raw = await self._call(self._client.raw_query, sql, parameters=parameters,
                               fmt="JSONCompactColumns")
        columns: list[list[Any]] = orjson.loads(raw)
        return columns

    async def insert_columns(self, table: str, column_names: Sequence[str],
                             columns: Sequence[Sequence[Any]],
                             settings: dict[str, Any] | None = None) -> None:
        await self._call(self._client.insert, table, columns, column_names=list(column_names),
                         column_oriented=True, settings=settings)

    async def insert_json_columns(self, table: str, columns: dict[str, list[Any]],
                                  settings: dict[str, Any] | None = None) -> None:
        """Columns of JSON values (decimals as decimal strings, dates as `YYYY-MM-DD`,
        instants as `YYYY-MM-DD hh:mm:ss.ffffff` in the column's zone), sent in the
        `JSONColumns` format: the engine parses them, where `insert_columns` converts every
        value in Python (for tens of thousands of rows, several times slower). The values
        are data, never SQL: the statement names only the table and the columns."""
        await self._call(self._client.raw_insert, table, list(columns), orjson.dumps(columns),
                         settings=settings, fmt="JSONColumns")

    async def ping(self) -> None:
        await self.rows("SELECT 1")

    def close(self) -> None:
        if self.embedded:
            return  # shared by the whole process (see connect)
        self._client.close()
        self._executor.shutdown(wait=True)
