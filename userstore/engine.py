"""Engines that make SQLite, PostgreSQL and MariaDB behave alike, and the session factory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import sqlalchemy
from sqlalchemy import URL, Engine, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from userstore.models import MARIADB_CHARSET

DATABASE_URL_VARIABLE: Final = "USERSTORE_DATABASE_URL"
DEFAULT_DATABASE_URL: Final = "sqlite:///userstore.db"

SQLITE_BUSY_TIMEOUT_SECONDS: Final = 30.0
# Strict mode makes MariaDB reject what PostgreSQL rejects instead of
# truncating or coercing it; UTC keeps server-side timestamps comparable.
MARIADB_SESSION_SETUP: Final = "SET SESSION sql_mode = 'TRADITIONAL', time_zone = '+00:00'"

# Dialects we choose a driver for when the URL names none.
_DEFAULT_DRIVERS: Final = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}


def resolve_url(url: str | URL | None = None) -> URL:
    """Return the database URL userstore uses.

    Args:
        url: An explicit URL. When ``None``, the environment variable
            ``USERSTORE_DATABASE_URL`` is used, else ``sqlite:///userstore.db``.

    Returns:
        The parsed URL, with psycopg 3 or PyMySQL filled in as the driver when
        a PostgreSQL or MariaDB URL names none.
    """
    if url is None:
        url = os.environ.get(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL
    parsed = make_url(url)
    if "+" not in parsed.drivername and parsed.drivername in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=f"{parsed.drivername}+{_DEFAULT_DRIVERS[parsed.drivername]}")
    return parsed


def create_engine(url: str | URL | None = None, *, echo: bool = False, **kwargs: Any) -> Engine:
    """Create an engine configured so every backend behaves like the others.

    SQLite gets a busy timeout, WAL journaling for file databases and
    ``BEGIN IMMEDIATE`` transactions (so a transaction that reads and then
    writes never fails on the upgrade to a write lock, and DDL is
    transactional). MariaDB gets utf8mb4, strict SQL mode, UTC and READ
    COMMITTED on every connection. Server backends get pool pre-ping.

    Args:
        url: Database URL; defaults to ``USERSTORE_DATABASE_URL``, else
            ``sqlite:///userstore.db``.
        echo: Log every SQL statement through the ``sqlalchemy.engine`` logger.
        **kwargs: Passed to :func:`sqlalchemy.create_engine`; they override
            the settings above (``connect_args`` are merged).

    Returns:
        A new engine. Nothing connects until it is first used.
    """
    resolved = resolve_url(url)
    backend = resolved.get_backend_name()
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_SECONDS
    else:
        options["pool_pre_ping"] = True
    if backend in ("mysql", "mariadb"):
        connect_args["charset"] = MARIADB_CHARSET
        connect_args["init_command"] = MARIADB_SESSION_SETUP
        options["isolation_level"] = "READ COMMITTED"
        # Replaced by _configure_mariadb's reset: it skips the ROLLBACK the
        # pool would otherwise send after every commit.
        options["pool_reset_on_return"] = None
    connect_args.update(kwargs.pop("connect_args", {}))
    options.update(kwargs)
    engine = sqlalchemy.create_engine(resolved, echo=echo, connect_args=connect_args, **options)
    if backend == "sqlite":
        _configure_sqlite(engine, file_database=_is_file_database(resolved))
    elif backend in ("mysql", "mariadb") and options["pool_reset_on_return"] is None:
        _configure_mariadb(engine)
    return engine


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory that :class:`~userstore.UserRepository` expects.

    Sessions autoflush before queries and expire loaded users on commit, so a
    read after a commit sees the database, as in SQLAlchemy's defaults.

    Args:
        engine: An engine from :func:`create_engine`.

    Returns:
        A ``sessionmaker`` bound to ``engine``.
    """
    return sessionmaker(bind=engine, autoflush=True, expire_on_commit=True)


_WRITE_INTENT: ContextVar[bool] = ContextVar("userstore_sqlite_write_intent", default=False)


@contextmanager
def write_intent() -> Iterator[None]:
    """Declare that a transaction begun inside this block is going to write.

    On SQLite, a transaction begun while this is active starts with
    ``BEGIN IMMEDIATE`` (it waits for the write lock up front, so it cannot
    fail later on the upgrade from reading to writing); every other SQLite
    transaction starts deferred, so readers never wait. Other backends
    ignore it. It affects only a transaction that begins inside the block.
    """
    token = _WRITE_INTENT.set(True)
    try:
        yield
    finally:
        _WRITE_INTENT.reset(token)


def _is_file_database(url: URL) -> bool:
    database = url.database or ""
    return database not in ("", ":memory:") and url.query.get("mode") != "memory"


def _configure_sqlite(engine: Engine, *, file_database: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module, which would
        # otherwise begin lazily (deferred) and commit before DDL; the
        # "begin" hook below issues our own BEGIN instead.
        dbapi_connection.isolation_level = None
        # (The busy timeout is sqlite3's own ``timeout`` argument, so a
        # caller's connect_args={"timeout": ...} takes effect.)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        if file_database:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sqlalchemy.Connection) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to the busy
        # timeout), so no transaction can fail later with SQLITE_BUSY when it
        # moves from reading to writing.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


_SERVER_STATUS_IN_TRANS: Final = 1  # MariaDB's SERVER_STATUS_IN_TRANS flag


def _configure_mariadb(engine: Engine) -> None:
    @event.listens_for(engine, "reset")
    def _on_reset(
        dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry, _state: object
    ) -> None:
        # A connection goes back to the pool: roll back only if the server says
        # a transaction is open (PyMySQL keeps the flag from every reply). After
        # a commit, that saves a round trip per unit of work; a connection
        # abandoned mid-transaction is still rolled back.
        status = getattr(dbapi_connection, "server_status", None)
        if status is None or status & _SERVER_STATUS_IN_TRANS:
            dbapi_connection.rollback()
