"""Throwaway test databases on SQLite, PostgreSQL and MariaDB, and the clusters' targets.

Server databases are created with a deliberately unhelpful default collation
(case-insensitive on MariaDB, ICU linguistic order on PostgreSQL), so a test
passes only if userstore's schema pins its own collation.

Beside the three backends, the contract suite runs on two cluster targets
(see :mod:`tests.clusters`): ``pgbouncer`` (PostgreSQL through PgBouncer in
transaction mode) and ``galera`` (MariaDB, each session on another node). A
test's ``backend`` is then a :class:`Target`: a ``str`` equal to its dialect
family (``backend == "postgresql"`` holds through PgBouncer), whose
``target`` attribute, and test id, name the way in.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest
import sqlalchemy
from sqlalchemy import URL, Engine, make_url

import userstore
from tests import clusters

ALL_BACKENDS: Final = ("sqlite", "postgresql", "mariadb")
ALL_TARGETS: Final = (*ALL_BACKENDS, *clusters.CLUSTER_TARGETS)


class Target(str):
    """A contract-suite target reached another way: equal to its dialect family's name.

    ``Target("postgresql", "pgbouncer") == "postgresql"``, so every branch a
    test takes by database applies as it is; ``.target`` says which way in.
    """

    target: str

    def __new__(cls, family: str, target: str) -> Target:
        value = super().__new__(cls, family)
        value.target = target
        return value

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return str(self), self.target


CONTRACT_TARGETS: Final = {
    "pgbouncer": Target("postgresql", "pgbouncer"),
    "galera": Target("mariadb", "galera"),
}
"""The cluster targets the contract suite runs on, by test id."""


def target_name(backend: str) -> str:
    """The target's own name: ``pgbouncer`` for the PgBouncer target, else the backend."""
    return getattr(backend, "target", str(backend))


def _names(variable: str) -> set[str]:
    value = os.environ.get(variable, "")
    return {part.strip() for part in value.split(",") if part.strip()}


def _selected_targets() -> tuple[str, ...]:
    """Targets named in ``USERSTORE_TEST_BACKENDS`` (default, or ``all``: every one).

    Raises:
        ValueError: the variable names a target that does not exist.
    """
    names = _names("USERSTORE_TEST_BACKENDS")
    if not names or "all" in names:
        return ALL_TARGETS
    unknown = names - set(ALL_TARGETS)
    if unknown:
        raise ValueError(
            f"USERSTORE_TEST_BACKENDS names unknown backends {sorted(unknown)}; "
            f"choose from {', '.join(ALL_TARGETS)} or all"
        )
    return tuple(target for target in ALL_TARGETS if target in names)


SELECTED: Final = _selected_targets()
"""Every target under test, backends and clusters, in a fixed order."""

BACKENDS: Final = tuple(backend for backend in ALL_BACKENDS if backend in SELECTED)
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
    """Targets named in ``USERSTORE_REQUIRE_BACKENDS``: missing ones fail, not skip.

    ``all`` means every target under test (:data:`SELECTED`).

    Raises:
        ValueError: a required target is unknown, or left out by ``USERSTORE_TEST_BACKENDS``.
    """
    names = _names("USERSTORE_REQUIRE_BACKENDS")
    if "all" in names:
        return set(SELECTED)
    unknown = names - set(ALL_TARGETS)
    if unknown:
        raise ValueError(
            f"USERSTORE_REQUIRE_BACKENDS names unknown backends {sorted(unknown)}; "
            f"choose from {', '.join(ALL_TARGETS)} or all"
        )
    left_out = names - set(SELECTED)
    if left_out:
        raise ValueError(
            f"USERSTORE_REQUIRE_BACKENDS requires {sorted(left_out)}, "
            f"but USERSTORE_TEST_BACKENDS selects only {', '.join(SELECTED)}"
        )
    return names


required_backends()  # a contradictory setting fails at start-up, before any test runs


def _admin_url(name: str) -> URL:
    return clusters.ADMIN_URLS[name] if name in clusters.ADMIN_URLS else make_url(SERVER_URLS[name])


def _admin_engine(name: str) -> sqlalchemy.Engine:
    url = _admin_url(name)
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
        what = name if name in BACKENDS else f"the {name} target's"
        reason = f"{what} server at {url.render_as_string()} is not reachable: {exc.orig}"
        if name in clusters.ADMIN_URLS:
            reason += " (bash .ci/clusters up starts it)"
        if name in required_backends():
            pytest.fail(f"{reason} (USERSTORE_REQUIRE_BACKENDS requires it)")
        pytest.skip(reason)
    return engine


def require_target(name: str) -> None:
    """Skip the test unless target ``name`` is under test and answers; fail if it is required.

    ``name`` is a backend or a cluster target (``pgbouncer``, ``galera``,
    ``pg-replica``); for a cluster, its admin server must answer
    (:data:`tests.clusters.ADMIN_URLS`).
    """
    if name not in SELECTED:
        pytest.skip(f"{name} is not under test (USERSTORE_TEST_BACKENDS={','.join(SELECTED)})")
    if name != "sqlite":
        _admin_engine(name).dispose()


@contextmanager
def throwaway_database(backend: str, tmp_path: Path) -> Iterator[URL]:
    """Create an empty database on ``backend``, yield its URL, drop it afterwards.

    ``backend`` may be a target: ``pgbouncer`` (or its :class:`Target`) gets a
    database on the PostgreSQL primary and yields the URL through PgBouncer;
    ``galera`` one on the first node, seen by every node before it is yielded
    (the first node's URL); ``pg-replica`` one on the primary (its URL);
    ``mariadb-replica`` one on the primary, seen by the replica before it is
    yielded (the primary's URL).
    """
    name = target_name(backend)
    if name not in SELECTED:
        pytest.skip(f"{name} is not under test (USERSTORE_TEST_BACKENDS={','.join(SELECTED)})")
    database = f"userstore_test_{uuid.uuid4().hex[:12]}"
    if name == "sqlite":
        tmp_path.mkdir(parents=True, exist_ok=True)
        yield make_url(f"sqlite:///{tmp_path / database}.db")
        return
    family = _FAMILY.get(name, name)
    admin = _admin_engine(name)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(_CREATE[family].format(name=database))
        try:
            if name == "galera":
                _wait_until_every_node_has(database)
            elif name == "mariadb-replica":
                _wait_until_the_replica_has(database)
            yield _url_of(name, database)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(_DROP[family].format(name=database))
    finally:
        admin.dispose()


_FAMILY: Final = {
    "pgbouncer": "postgresql",
    "pg-replica": "postgresql",
    "galera": "mariadb",
    "mariadb-replica": "mariadb",
}


def _url_of(name: str, database: str) -> URL:
    if name == "pgbouncer":
        return clusters.via_pgbouncer(database)
    return _admin_url(name).set(database=database)


def _wait_until_every_node_has(database: str) -> None:
    """Return once every Galera node has applied the database's creation."""
    for url in clusters.GALERA_URLS:
        engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.NullPool, connect_args={"connect_timeout": 5}
        )
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(clusters.GALERA_CAUSALITY)
                found = connection.exec_driver_sql(f"SHOW DATABASES LIKE '{database}'").all()
                assert found, f"{database} did not reach the Galera node at {url}"
        finally:
            engine.dispose()


def _wait_until_the_replica_has(database: str) -> None:
    """Return once the asynchronous MariaDB replica has replayed the database's creation."""
    engine = sqlalchemy.create_engine(
        clusters.MARIADB_REPLICA_URL,
        poolclass=sqlalchemy.NullPool,
        connect_args={"connect_timeout": 5},
    )
    try:
        for _ in range(300):
            with engine.connect() as connection:
                if connection.exec_driver_sql(f"SHOW DATABASES LIKE '{database}'").all():
                    return
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError(f"{database} did not reach the MariaDB replica in 15 s")


def direct_url(backend: str, url: URL) -> URL:
    """``url``, or for the PgBouncer target the same database on the primary, bypassing PgBouncer.

    For checking stored rows with plain SQL (a plain driver behind
    transaction pooling would fail on its own prepared statements).
    """
    if target_name(backend) == "pgbouncer":
        return clusters.PG_PRIMARY_URL.set(database=url.database)
    return url


def engine_options(backend: str) -> dict[str, Any]:
    """Keyword arguments that userstore's engines need on ``backend``'s target.

    PgBouncer: ``transaction_pooling=True``. Galera: ``causal_reads=True``, as
    an app spreading its sessions over the nodes needs, and no pool, so each
    session is a new connection, sent to the next node by :func:`prepare_engine`.
    """
    name = target_name(backend)
    if name == "pgbouncer":
        return {"transaction_pooling": True}
    if name == "galera":
        return {"causal_reads": True, "poolclass": clusters.NewConnectionPool}
    return {}


def worker_engine_options(backend: str) -> dict[str, Any]:
    """Keyword arguments for the engines a test's worker processes open on ``database_url``.

    What the target cannot work without: ``transaction_pooling=True`` behind
    PgBouncer. (On Galera, ``database_url`` is one node, where workers race as
    on one server; races across nodes are tests/test_galera_*.py's.)
    """
    return {"transaction_pooling": True} if target_name(backend) == "pgbouncer" else {}


def prepare_engine(backend: str, engine: Engine) -> None:
    """Set up a (sync) engine made with :func:`engine_options` for ``backend``'s target.

    On Galera: each new connection goes to the next node
    (:func:`tests.clusters.spread_over_galera`).
    """
    if target_name(backend) == "galera":
        clusters.spread_over_galera(engine)


def create_test_engine(backend: str, url: str | URL, **kwargs: Any) -> Engine:
    """A userstore engine on ``url``, as ``backend``'s target needs (:func:`engine_options`)."""
    engine = userstore.create_engine(url, **{**engine_options(backend), **kwargs})
    prepare_engine(backend, engine)
    return engine


def plain_test_engine(backend: str, url: URL, **kwargs: Any) -> Engine:
    """A plain SQLAlchemy engine for checking ``url``'s rows: direct, and causal on Galera."""
    engine = sqlalchemy.create_engine(direct_url(backend, url), **kwargs)
    if target_name(backend) == "galera":
        clusters.wait_for_causality(engine)
    return engine


@contextmanager
def migrated_database(backend: str, tmp_path: Path) -> Iterator[URL]:
    """A throwaway database on ``backend`` with userstore's schema at head."""
    from userstore import migrations

    with throwaway_database(backend, tmp_path) as url:
        engine = create_test_engine(backend, url)
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
