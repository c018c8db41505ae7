"""Throwaway benchmark databases: a temp-dir SQLite file, or a database of its own on a server.

Server URLs come from ``USERSTORE_TEST_POSTGRESQL_URL`` and
``USERSTORE_TEST_MARIADB_URL`` (the test suite's variables); each run creates
``userstore_bench_<random>`` there and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import sqlalchemy
from sqlalchemy import URL, make_url

BACKENDS: Final = ("sqlite", "postgresql", "mariadb")
_SERVER_URL_VARIABLES: Final = {
    "postgresql": (
        "USERSTORE_TEST_POSTGRESQL_URL",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ),
    "mariadb": ("USERSTORE_TEST_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/test"),
}
_CREATE: Final = {
    "postgresql": "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'",
    "mariadb": "CREATE DATABASE {name} CHARACTER SET utf8mb4",
}
_DROP: Final = {
    "postgresql": "DROP DATABASE IF EXISTS {name} WITH (FORCE)",
    "mariadb": "DROP DATABASE IF EXISTS {name}",
}
_CONNECT_TIMEOUT_SECONDS: Final = 5


class BackendUnavailableError(Exception):
    """The backend cannot be benchmarked here; the message says why."""


def server_url(backend: str) -> URL:
    """Return the URL of the server ``backend`` runs on (its configured database)."""
    variable, default = _SERVER_URL_VARIABLES[backend]
    return make_url(os.environ.get(variable) or default)


@contextmanager
def throwaway_database(backend: str, directory: Path) -> Iterator[URL]:
    """Create an empty database for ``backend``, yield its URL and drop it afterwards.

    Raises:
        BackendUnavailableError: the server is unreachable or its driver is missing.
    """
    if backend == "sqlite":
        yield make_url(f"sqlite:///{directory / new_database_name()}.db")
        return
    with database_on(server_url(backend), backend) as url:
        yield url


def new_database_name() -> str:
    """A fresh name for a benchmark's throwaway database."""
    return f"userstore_bench_{uuid.uuid4().hex[:12]}"


@contextmanager
def database_on(server: URL, backend: str) -> Iterator[URL]:
    """Create an empty database on the ``backend`` server at ``server``; drop it afterwards.

    Raises:
        BackendUnavailableError: the server is unreachable or its driver is missing.
    """
    name = new_database_name()
    admin = admin_engine(server, backend)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(_CREATE[backend].format(name=name))
        try:
            yield server.set(database=name)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(_DROP[backend].format(name=name))
    finally:
        admin.dispose()


def admin_engine(url: URL, backend: str) -> sqlalchemy.Engine:
    """An autocommit engine on ``url`` that has answered once.

    Raises:
        BackendUnavailableError: the server is unreachable or its driver is missing.
    """
    try:
        engine = sqlalchemy.create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            poolclass=sqlalchemy.NullPool,
            connect_args={"connect_timeout": _CONNECT_TIMEOUT_SECONDS},
        )
    except ImportError as exc:
        raise BackendUnavailableError(f"the {backend} driver is not installed: {exc}") from exc
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as exc:
        engine.dispose()
        raise BackendUnavailableError(
            f"{backend} server at {url.render_as_string()} is not reachable "
            f"(for a cluster: bash .ci/clusters up): {' '.join(str(exc.orig).split())}"
        ) from exc
    return engine
