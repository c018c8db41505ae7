"""The async drivers used directly (aiosqlite, asyncpg, asyncmy), set up as userstore's engine.

The same settings as :mod:`benchmarks.drivers` gives the sync drivers, and so
as userstore's engines: on SQLite the busy timeout, WAL, the foreign-keys
pragma and a deferred ``BEGIN`` per transaction; on MariaDB utf8mb4, the same
session setup and READ COMMITTED; asyncpg with its defaults (its own
prepared-statement cache included, as SQLAlchemy's asyncpg dialect has one).
Resets and checks of the table stay with the sync raw connection; this one
only runs the timed work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import URL

from userstore.engine import MARIADB_SESSION_SETUP
from userstore.models import MARIADB_CHARSET
from userstore.sqlite import BUSY_TIMEOUT_SECONDS as SQLITE_BUSY_TIMEOUT_SECONDS

#: The columns every bulk path writes, in this order.
COPY_COLUMNS: Final = ("name", "number")


class RawAsyncConnection:
    """One connection of ``backend``'s async driver, with the few verbs the workloads use."""

    def __init__(self, backend: str, connection: Any) -> None:
        self.backend = backend
        self.connection = connection
        self._transaction: Any = None
        self._cursor: Any = None  # asyncmy: one cursor, reused as the sync variants reuse theirs

    @classmethod
    async def open(cls, backend: str, url: URL) -> RawAsyncConnection:
        if backend == "sqlite":
            return cls(backend, await _connect_aiosqlite(url))
        if backend == "postgresql":
            return cls(backend, await _connect_asyncpg(url))
        return cls(backend, await _connect_asyncmy(url))

    @property
    def driver(self) -> str:
        return {"sqlite": "aiosqlite", "postgresql": "asyncpg"}.get(self.backend, "asyncmy")

    def placeholder(self, position: int) -> str:
        """The driver's placeholder for the ``position``-th parameter (1-based)."""
        if self.backend == "sqlite":
            return "?"
        return f"${position}" if self.backend == "postgresql" else "%s"

    def with_placeholders(self, sql: str) -> str:
        """``sql`` written with ``%s`` placeholders, in this driver's style."""
        parts = sql.split("%s")
        text = parts[0]
        for position, part in enumerate(parts[1:], start=1):
            text += self.placeholder(position) + part
        return text

    @property
    def insert_sql(self) -> str:
        return self.with_placeholders("INSERT INTO users (name, number) VALUES (%s, %s)")

    async def begin(self) -> None:
        """Start a transaction as userstore does (asyncmy begins implicitly)."""
        if self.backend == "sqlite":
            await self.connection.execute("BEGIN")
        elif self.backend == "postgresql":
            self._transaction = self.connection.transaction()
            await self._transaction.start()

    async def commit(self) -> None:
        if self.backend == "postgresql":
            transaction, self._transaction = self._transaction, None
            await transaction.commit()
        else:
            await self.connection.commit()

    async def rollback(self) -> None:
        if self.backend == "postgresql":
            transaction, self._transaction = self._transaction, None
            if transaction is not None:
                await transaction.rollback()
        else:
            await self.connection.rollback()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Begin, then commit on success or roll back on error."""
        await self.begin()
        try:
            yield
        except BaseException:
            await self.rollback()
            raise
        await self.commit()

    async def execute(self, sql: str, parameters: Sequence[Any]) -> None:
        """Run one statement that returns no rows."""
        if self.backend == "sqlite":
            await self.connection.execute(sql, parameters)
        elif self.backend == "postgresql":
            await self.connection.execute(sql, *parameters)
        else:
            await self._mariadb_cursor().execute(sql, parameters)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.backend == "mariadb":
            await self._mariadb_cursor().executemany(sql, rows)
        else:
            await self.connection.executemany(sql, rows)

    async def fetch_one(self, sql: str, parameters: Sequence[Any]) -> Any:
        """Return the first row of a query, in one round trip where the driver allows."""
        if self.backend == "sqlite":
            rows = await self.connection.execute_fetchall(sql, parameters)
            return rows[0] if rows else None
        if self.backend == "postgresql":
            return await self.connection.fetchrow(sql, *parameters)
        cursor = self._mariadb_cursor()
        await cursor.execute(sql, parameters)
        return await cursor.fetchone()

    async def copy_records(self, rows: Sequence[Sequence[Any]]) -> None:
        """asyncpg's binary COPY of ``rows`` into users (PostgreSQL only)."""
        await self.connection.copy_records_to_table("users", records=rows, columns=COPY_COLUMNS)

    async def stream(self, sql: str, batch_size: int) -> AsyncIterator[Sequence[Any]]:
        """Yield the rows of ``sql`` in batches, from a server-side cursor on the servers.

        On PostgreSQL and SQLite, call it inside :meth:`transaction`; asyncmy's
        unbuffered cursor streams outside one too.
        """
        if self.backend == "sqlite":
            cursor = await self.connection.execute(sql)
            try:
                while rows := await cursor.fetchmany(batch_size):
                    yield rows
            finally:
                await cursor.close()
        elif self.backend == "postgresql":
            cursor = await self.connection.cursor(sql)
            while rows := await cursor.fetch(batch_size):
                yield rows
        else:
            import asyncmy.cursors

            async with self.connection.cursor(asyncmy.cursors.SSCursor) as cursor:
                await cursor.execute(sql)
                while rows := await cursor.fetchmany(batch_size):
                    yield rows

    def _mariadb_cursor(self) -> Any:
        if self._cursor is None:
            self._cursor = self.connection.cursor()
        return self._cursor

    async def close(self) -> None:
        if self._cursor is not None:
            await self._cursor.close()
        if self.backend == "mariadb":
            await self.connection.ensure_closed()  # (asyncmy's close() is not awaitable)
        else:
            await self.connection.close()


async def _connect_aiosqlite(url: URL) -> Any:
    import aiosqlite

    # As userstore.create_async_engine: transactions left to us (a deferred
    # BEGIN in begin()), the same busy timeout and pragmas.
    connection = await aiosqlite.connect(
        url.database or "", timeout=SQLITE_BUSY_TIMEOUT_SECONDS, isolation_level=None
    )
    await connection.execute("PRAGMA foreign_keys = ON")
    await connection.execute("PRAGMA journal_mode = WAL")
    return connection


async def _connect_asyncpg(url: URL) -> Any:
    import asyncpg

    return await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
    )


async def _connect_asyncmy(url: URL) -> Any:
    import asyncmy

    connection = await asyncmy.connect(
        host=url.host or "localhost",
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=url.database,
        charset=MARIADB_CHARSET,
        init_command=MARIADB_SESSION_SETUP,
        autocommit=False,
    )
    async with connection.cursor() as cursor:
        await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return connection
