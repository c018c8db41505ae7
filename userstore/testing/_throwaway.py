"""The throwaway database the pytest plugin creates for one test run, and drops after it.

On PostgreSQL and MariaDB it is a new database on the server the plugin was
given (UTF8 / utf8mb4), named uniquely per run and per pytest-xdist worker;
on SQLite a new file in pytest's temporary directory. Either way it is
migrated to userstore's head once, before the first test that uses it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from sqlalchemy import URL, Engine, NullPool, text

from userstore import migrations
from userstore.engine import create_engine
from userstore.errors import DatabaseError
from userstore.urls import resolve_url

NAME_PREFIX: Final = "userstore_pytest_"
"""Every throwaway server database's name starts with this."""

_CREATE: Final = {
    "postgresql": "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'",
    "mariadb": "CREATE DATABASE {name} CHARACTER SET utf8mb4",
}
_DROP: Final = {
    "postgresql": "DROP DATABASE IF EXISTS {name}",
    "mariadb": "DROP DATABASE IF EXISTS {name}",
}
# Connections a test left open would make DROP DATABASE fail (PostgreSQL) or
# wait for their locks (MariaDB): they are ended first.
_OTHER_CONNECTIONS: Final = {
    "postgresql": (
        "SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
    ),
    "mariadb": (
        "SELECT id FROM information_schema.processlist WHERE db = :name AND id <> CONNECTION_ID()"
    ),
}
_END_CONNECTION: Final = {
    "postgresql": "SELECT pg_terminate_backend(:id)",
    "mariadb": "KILL :id",
}


def backend_of(url: str | URL) -> str:
    """The backend a URL names: ``sqlite``, ``postgresql`` or ``mariadb``."""
    backend = resolve_url(url).get_backend_name()
    return "mariadb" if backend == "mysql" else backend


def unique_name() -> str:
    """A database name no other run (or pytest-xdist worker) uses at the same time."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{NAME_PREFIX}{worker + '_' if worker else ''}{uuid.uuid4().hex[:12]}"


@contextmanager
def throwaway_database(server_url: str | URL, sqlite_file: Path) -> Iterator[URL]:
    """Create a database on ``server_url``'s server, migrate it to head, yield its URL, drop it.

    Args:
        server_url: Any URL userstore accepts; for a server, the database it
            names is only used to connect while creating and dropping.
        sqlite_file: Where the database goes when ``server_url`` is SQLite's
            (any file it names is left alone).

    Raises:
        UserStoreError: the server refused to create the database, or the
            migration failed.
    """
    backend = backend_of(server_url)
    if backend == "sqlite":
        url = resolve_url(f"sqlite:///{sqlite_file}")
        try:
            _migrate(url)
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
        return
    name = unique_name()
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(_CREATE[backend].format(name=name))
        try:
            url = resolve_url(server_url).set(database=name)
            _migrate(url)
            yield url
        finally:
            _drop(admin, backend, name)
    finally:
        admin.dispose()


def _migrate(url: URL) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()


def _drop(admin: Engine, backend: str, name: str) -> None:
    with admin.connect() as connection:
        others = connection.execute(text(_OTHER_CONNECTIONS[backend]), {"name": name}).scalars()
        for other in list(others):
            # (MariaDB refuses to kill a connection that ended meanwhile.)
            with contextlib.suppress(DatabaseError):
                connection.execute(text(_END_CONNECTION[backend]), {"id": other})
        connection.exec_driver_sql(_DROP[backend].format(name=name))
