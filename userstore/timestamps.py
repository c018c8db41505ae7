"""Timezone-aware UTC timestamps that every backend stores and returns alike.

PostgreSQL stores ``timestamptz``; MariaDB ``DATETIME(6)`` and SQLite text hold
naive UTC. Either way Python gets an aware datetime in UTC, whatever the time
zone of the server or the session.

A time the database stamps means the same on every backend: when the statement
that wrote the row ran, not when its transaction began. PostgreSQL's ``now()``
is the transaction's start, so it gets ``statement_timestamp()``; MariaDB's
``UTC_TIMESTAMP(6)`` and SQLite's ``'now'`` are already the statement's time,
and SQLite has no transaction start time to offer. Precision: SQLite's clock
gives milliseconds (stored with three zero digits), the others microseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

# SQLite's strftime has millisecond precision; the zeros make the text match
# the microsecond format SQLAlchemy writes, so stored values sort alike.
SQLITE_UTC_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
MARIADB_UTC_NOW = "UTC_TIMESTAMP(6)"
# Not now(): that is the transaction's start time, which SQLite cannot give.
POSTGRESQL_UTC_NOW = "statement_timestamp()"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime column.

    Binding a naive datetime raises ``ValueError``: its zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a timestamp must be timezone-aware, got naive {value!r}")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class utc_now(FunctionElement[datetime]):  # noqa: N801 - reads as the SQL function it renders
    """The database's current time in UTC, rendered for each backend.

    On SQLite, PostgreSQL and MariaDB alike, the time of the statement it is
    part of (see the module docstring).
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "utc_now"


@compiles(utc_now)
def _utc_now_default(_element: utc_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utc_now, "postgresql")
def _utc_now_postgresql(_element: utc_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return POSTGRESQL_UTC_NOW


@compiles(utc_now, "mysql")
@compiles(utc_now, "mariadb")
def _utc_now_mariadb(_element: utc_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return MARIADB_UTC_NOW


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(_element: utc_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return SQLITE_UTC_NOW
