"""Throwaway test databases on SQLite, PostgreSQL and MariaDB.

Server databases are created with a deliberately unhelpful default collation
(case-insensitive on MariaDB, ICU linguistic order on PostgreSQL), so a test
passes only if userstore's schema pins its own collation.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pytest
import sqlalchemy
from sqlalchemy import URL, make_url

ALL_BACKENDS: Final = ("sqlite", "postgresql", "mariadb")


def _names(variable: str) -> set[str]:
    value = os.environ.get(variable, "")
    return {part.strip() for part in value.split(",") if part.strip()}


def _selected_backends() -> tuple[str, ...]:
    """Backends named in ``USERSTORE_TEST_BACKENDS`` (default, or ``all``: every one).

    Raises:
        ValueError: the variable names a backend that does not exist.
    """
    names = _names("USERSTORE_TEST_BACKENDS")
    if not names or "all" in names:
        return ALL_BACKENDS
    unknown = names - set(ALL_BACKENDS)
    if unknown:
        raise ValueError(
            f"USERSTORE_TEST_BACKENDS names unknown backends {sorted(unknown)}; "
            f"choose from {', '.join(ALL_BACKENDS)} or all"
        )
    return tuple(backend for backend in ALL_BACKENDS if backend in names)


BACKENDS: Final = _selected_backends()
"""The backends under test, in a fixed order; tests of any other backend skip."""

SERVER_URLS: Final = {
    "postgresql": os.environ.get(
        "USERSTORE_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get(
        "USERSTORE_TEST_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/test"
    ),
}
_CREATE: Final = {
    "postgresql": (
        "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    ),
    "mariadb": "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
}
_DROP: Final = {
    "postgresql": "DROP DATABASE IF EXISTS {name} WITH (FORCE)",
    "mariadb": "DROP DATABASE IF EXISTS {name}",
}


def required_backends() -> set[str]:
    """Backends named in ``USERSTORE_REQUIRE_BACKENDS``: missing ones fail, not skip.

    ``all`` means every backend under test (:data:`BACKENDS`).

    Raises:
        ValueError: a required backend is unknown, or left out by ``USERSTORE_TEST_BACKENDS``.
    """
    names = _names("USERSTORE_REQUIRE_BACKENDS")
    if "all" in names:
        return set(BACKENDS)
    unknown = names - set(ALL_BACKENDS)
    if unknown:
        raise ValueError(
            f"USERSTORE_REQUIRE_BACKENDS names unknown backends {sorted(unknown)}; "
            f"choose from {', '.join(ALL_BACKENDS)} or all"
        )
    left_out = names - set(BACKENDS)
    if left_out:
        raise ValueError(
            f"USERSTORE_REQUIRE_BACKENDS requires {sorted(left_out)}, "
            f"but USERSTORE_TEST_BACKENDS selects only {', '.join(BACKENDS)}"
        )
    return names


required_backends()  # a contradictory setting fails at start-up, before any test runs


def _admin_engine(backend: str) -> sqlalchemy.Engine:
    url = make_url(SERVER_URLS[backend])
    connect_args = {"connect_timeout": 5}
    # No pool: a server restarted by a fault test must not leave a dead connection here.
    engine = sqlalchemy.create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        connect_args=connect_args,
        poolclass=sqlalchemy.NullPool,
    )
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as exc:
        engine.dispose()
        reason = f"{backend} server at {url.render_as_string()} is not reachable: {exc.orig}"
        if backend in required_backends():
            pytest.fail(f"{reason} (USERSTORE_REQUIRE_BACKENDS requires it)")
        pytest.skip(reason)
    return engine


@contextmanager
def throwaway_database(backend: str, tmp_path: Path) -> Iterator[URL]:
    """Create an empty database on ``backend``, yield its URL, drop it afterwards."""
    if backend not in BACKENDS:
        pytest.skip(f"{backend} is not under test (USERSTORE_TEST_BACKENDS={','.join(BACKENDS)})")
    name = f"userstore_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        tmp_path.mkdir(parents=True, exist_ok=True)
        yield make_url(f"sqlite:///{tmp_path / name}.db")
        return
    admin = _admin_engine(backend)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(_CREATE[backend].format(name=name))
        try:
            yield make_url(SERVER_URLS[backend]).set(database=name)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(_DROP[backend].format(name=name))
    finally:
        admin.dispose()


@contextmanager
def migrated_database(backend: str, tmp_path: Path) -> Iterator[URL]:
    """A throwaway database on ``backend`` with userstore's schema at head."""
    from userstore import create_engine, migrations

    with throwaway_database(backend, tmp_path) as url:
        engine = create_engine(url)
        try:
            migrations.upgrade(engine)
        finally:
            engine.dispose()
        yield url


_OWN_CONNECTION_ID: Final = {
    "postgresql": "SELECT pg_backend_pid()",
    "mariadb": "SELECT CONNECTION_ID()",
}
_KILL: Final = {
    "postgresql": "SELECT pg_terminate_backend(:id)",
    "mariadb": "KILL :id",
}


def connection_id(connection: sqlalchemy.Connection, backend: str) -> int:
    """The server's id for ``connection`` (PostgreSQL backend pid, MariaDB connection id)."""
    return int(connection.exec_driver_sql(_OWN_CONNECTION_ID[backend]).scalar_one())


def kill_connections(url: URL, backend: str, server_ids: set[int]) -> None:
    """Kill server connections from outside, as an operator or a crash would."""
    admin = sqlalchemy.create_engine(
        url, poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as connection:
            for server_id in server_ids:
                connection.execute(sqlalchemy.text(_KILL[backend]), {"id": server_id})
    finally:
        admin.dispose()


def stored_users(url: URL) -> dict[str, int | None]:
    """Every stored user's number by name, read with plain SQL on a sync engine of its own."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text("SELECT name, number FROM users"))
            return {row.name: row.number for row in rows}
    finally:
        engine.dispose()
