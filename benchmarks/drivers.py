"""The DB-API drivers used directly, with the connection settings userstore's engine applies.

SQLite gets the same busy timeout, ``PRAGMA`` settings (WAL) and ``BEGIN
`` (deferred) transactions; MariaDB the same charset, session setup and READ
COMMITTED isolation; psycopg its defaults, as in userstore. So a ratio to a
raw variant measures the library, not the settings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any, Final

from sqlalchemy import URL

from benchmarks.framework import BenchmarkError
from userstore.engine import MARIADB_SESSION_SETUP
from userstore.models import MARIADB_CHARSET
from userstore.sqlite import BUSY_TIMEOUT_SECONDS as SQLITE_BUSY_TIMEOUT_SECONDS

FILL_BATCH_ROWS: Final = 10_000
_COPY: Final = "COPY users (name, number) FROM STDIN"
_CLEAR: Final = {
    "sqlite": "DELETE FROM users",
    "postgresql": "TRUNCATE users",
    "mariadb": "TRUNCATE TABLE users",
}
_SERVER_VERSION: Final = {
    "postgresql": "SHOW server_version",
    "mariadb": "SELECT VERSION()",
}


class RawConnection:
    """One DB-API connection of ``backend``'s driver; also loads and checks the users table."""

    def __init__(self, backend: str, connection: Any) -> None:
        self.backend = backend
        self.connection = connection
        #: The driver's placeholder: ``?`` for sqlite3, ``%s`` for psycopg and PyMySQL.
        self.placeholder = "?" if backend == "sqlite" else "%s"

    @classmethod
    def open(cls, backend: str, url: URL) -> RawConnection:
        if backend == "sqlite":
            return cls(backend, _connect_sqlite(url))
        if backend == "postgresql":
            return cls(backend, _connect_postgresql(url))
        return cls(backend, _connect_mariadb(url))

    @property
    def insert_sql(self) -> str:
        """``INSERT INTO users (name, number) VALUES (?, ?)`` with this driver's placeholders."""
        return f"INSERT INTO users (name, number) VALUES ({self.placeholder}, {self.placeholder})"

    def begin(self) -> None:
        """Start a transaction as userstore does (psycopg and PyMySQL begin implicitly)."""
        if self.backend == "sqlite":
            self.connection.execute("BEGIN")

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        self.connection.rollback()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Begin, then commit on success or roll back on error."""
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    @contextmanager
    def cursor(self, *, server_side: bool = False) -> Iterator[Any]:
        """Yield a cursor, closed afterwards; ``server_side`` streams results from the server.

        Server-side means a named cursor on psycopg and an ``SSCursor`` on
        PyMySQL; sqlite3 cursors step through results lazily anyway.
        """
        if server_side and self.backend == "postgresql":
            cursor = self.connection.cursor(name="benchmark_stream")
        elif server_side and self.backend == "mariadb":
            import pymysql.cursors

            cursor = self.connection.cursor(pymysql.cursors.SSCursor)
        else:
            cursor = self.connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def clear_users(self) -> None:
        """Delete every user (TRUNCATE on the servers)."""
        with self.transaction(), self.cursor() as cursor:
            cursor.execute(_CLEAR[self.backend])

    def fill_users(self, rows: Iterable[tuple[str, int]]) -> None:
        """Insert ``rows`` with the fastest plain statement (COPY on PostgreSQL), then commit."""
        iterator = iter(rows)
        with self.transaction(), self.cursor() as cursor:
            while batch := list(islice(iterator, FILL_BATCH_ROWS)):
                if self.backend == "postgresql":
                    with cursor.copy(_COPY) as copy:
                        for row in batch:
                            copy.write_row(row)
                else:
                    cursor.executemany(self.insert_sql, batch)

    def analyze(self) -> None:
        """Refresh the planner's statistics (and PostgreSQL's visibility map) after a fill."""
        if self.backend == "postgresql":
            self.connection.autocommit = True
            try:
                self.connection.execute("VACUUM ANALYZE users")
            finally:
                self.connection.autocommit = False
            return
        statement = "ANALYZE" if self.backend == "sqlite" else "ANALYZE TABLE users"
        with self.transaction(), self.cursor() as cursor:
            cursor.execute(statement)
            if cursor.description is not None:
                cursor.fetchall()

    def expect_users(self, count: int, number_sum: int) -> None:
        """Raise BenchmarkError unless the table holds ``count`` users whose numbers add up.

        Raises:
            BenchmarkError: naming what the table holds instead.
        """
        with self.transaction(), self.cursor() as cursor:
            cursor.execute("SELECT COUNT(*), COALESCE(SUM(number), 0) FROM users")
            stored_count, stored_sum = cursor.fetchone()
        if (int(stored_count), int(stored_sum)) != (count, number_sum):
            raise BenchmarkError(
                f"expected {count} users with numbers adding up to {number_sum}, "
                f"found {stored_count} adding up to {stored_sum}"
            )

    def server_version(self) -> str:
        if self.backend == "sqlite":
            return f"SQLite {sqlite3.sqlite_version}"
        with self.transaction(), self.cursor() as cursor:
            cursor.execute(_SERVER_VERSION[self.backend])
            (version,) = cursor.fetchone()
        prefix = "PostgreSQL" if self.backend == "postgresql" else "MariaDB"
        return f"{prefix} {version}"

    def close(self) -> None:
        self.connection.close()


def _connect_sqlite(url: URL) -> sqlite3.Connection:
    # As userstore.create_engine: sqlite3 leaves transactions to us (a deferred
    # BEGIN in begin()), the same busy timeout and pragmas.
    connection = sqlite3.connect(
        url.database or "", timeout=SQLITE_BUSY_TIMEOUT_SECONDS, isolation_level=None
    )
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    return connection


def _connect_postgresql(url: URL) -> Any:
    import psycopg

    return psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
    )


def _connect_mariadb(url: URL) -> Any:
    import pymysql

    connection = pymysql.connect(
        host=url.host or "localhost",
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=url.database,
        charset=MARIADB_CHARSET,
        init_command=MARIADB_SESSION_SETUP,
        autocommit=False,
    )
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return connection
