"""The scaling-out clusters that ``bash .ci/clusters up`` starts, as the tests reach them.

Targets (names for ``USERSTORE_TEST_BACKENDS`` / ``USERSTORE_REQUIRE_BACKENDS``):

- ``pgbouncer``: PgBouncer 1.18 in transaction pooling mode (6441) in front of
  the PostgreSQL primary (5441). Databases are created on the primary; any
  database name reaches the primary's database of that name through it.
- ``galera``: three MariaDB Galera nodes (3311, 3312, 3313); a database
  created on one node exists on all (DDL replicates).
- ``pg-replica``: the same primary (5441) and its hot standby (5442).
- ``mariadb-replica``: a plain MariaDB primary (3321) and an asynchronous
  replica (3322) replicating its binary log by GTID.

Each URL can be moved with an environment variable (below), as
``USERSTORE_TEST_POSTGRESQL_URL`` moves the machine's own PostgreSQL.
Throwaway databases and the skip/fail rule live in :mod:`tests.databases`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, Final

import sqlalchemy
from sqlalchemy import URL, Engine, event, make_url


def _url(variable: str, default: str) -> URL:
    return make_url(os.environ.get(variable, default))


PG_PRIMARY_URL: Final = _url(
    "USERSTORE_TEST_PG_PRIMARY_URL", "postgresql+psycopg://postgres@127.0.0.1:5441/postgres"
)
PG_STANDBY_URL: Final = _url(
    "USERSTORE_TEST_PG_STANDBY_URL", "postgresql+psycopg://postgres@127.0.0.1:5442/postgres"
)
PGBOUNCER_URL: Final = _url(
    "USERSTORE_TEST_PGBOUNCER_URL", "postgresql+psycopg://postgres@127.0.0.1:6441/postgres"
)
GALERA_URLS: Final = tuple(
    _url(f"USERSTORE_TEST_GALERA{node}_URL", f"mariadb+pymysql://root@127.0.0.1:{port}/test")
    for node, port in enumerate((3311, 3312, 3313), start=1)
)

MARIADB_PRIMARY_URL: Final = _url(
    "USERSTORE_TEST_MARIADB_PRIMARY_URL", "mariadb+pymysql://root@127.0.0.1:3321/test"
)
MARIADB_REPLICA_URL: Final = _url(
    "USERSTORE_TEST_MARIADB_REPLICA_URL", "mariadb+pymysql://root@127.0.0.1:3322/test"
)

CLUSTER_TARGETS: Final = ("pgbouncer", "galera", "pg-replica", "mariadb-replica")
"""Every cluster target's name, in the order tests run them."""

ADMIN_URLS: Final = {
    "pgbouncer": PG_PRIMARY_URL,
    "galera": GALERA_URLS[0],
    "pg-replica": PG_PRIMARY_URL,
    "mariadb-replica": MARIADB_PRIMARY_URL,
}
"""Where each target's throwaway databases are created and dropped."""

# What the tests' own plain engines on Galera set: each statement (reads,
# UPDATE/DELETE, INSERT/REPLACE, SHOW) waits until its node has applied every
# write set the cluster committed before it, so the rows a test checks or
# clears are the cluster's, whichever node the plain engine is on.
GALERA_CAUSALITY: Final = "SET SESSION wsrep_sync_wait = 15"


def via_pgbouncer(database: str) -> URL:
    """The URL that reaches ``database`` on the primary through PgBouncer."""
    return PGBOUNCER_URL.set(database=database)


def galera_urls(database: str) -> list[URL]:
    """One URL per Galera node for ``database``, in node order."""
    return [url.set(database=database) for url in GALERA_URLS]


class NewConnectionPool(sqlalchemy.NullPool):
    """``NullPool`` (a new connection per checkout) that counts checkouts as ``QueuePool`` does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._checked_out = 0

    def _do_get(self) -> Any:
        connection = super()._do_get()
        with self._lock:
            self._checked_out += 1
        return connection

    def _do_return_conn(self, record: Any) -> None:
        with self._lock:
            self._checked_out -= 1
        super()._do_return_conn(record)

    def checkedout(self) -> int:
        """Connections checked out and not yet returned."""
        return self._checked_out


def spread_over_galera(engine: Engine) -> None:
    """Open each new connection of ``engine`` on the next Galera node, in turn.

    With :class:`NewConnectionPool` every session is a new connection, so
    consecutive sessions, and sessions open at once, run on different nodes.
    The node is chosen underneath userstore's own ``do_connect`` listeners
    (they call ``dialect.connect``), so all of them still run.
    """
    nodes = itertools.cycle([(url.host, url.port) for url in GALERA_URLS])
    lock = threading.Lock()
    dialect = engine.dialect
    connect = dialect.connect

    def connect_to_the_next_node(*cargs: Any, **cparams: Any) -> Any:
        with lock:
            cparams["host"], cparams["port"] = next(nodes)
        if dialect.driver == "pymysql":
            # PyMySQL builds a default TLS context for every connection (some 25 ms
            # of CPU), unused on loopback; here every session is a new connection.
            cparams.setdefault("ssl_disabled", True)
        return connect(*cargs, **cparams)

    dialect.connect = connect_to_the_next_node  # type: ignore[method-assign]


def wait_for_causality(engine: Engine) -> None:
    """Make each new connection of a plain engine on Galera wait for causality."""

    @event.listens_for(engine, "connect")
    def _causal(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(GALERA_CAUSALITY)
        finally:
            cursor.close()


class RetryLog(logging.Handler):
    """The unit-of-work runner's retry records (a WARNING per failed attempt), from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "userstore_runner", None) is not None:
            with self._lock_records:
                self.retries.append(record)

    @classmethod
    @contextlib.contextmanager
    def listening(cls) -> Iterator[RetryLog]:
        """Collect the retries logged while the block runs."""
        handler = cls()
        logger = logging.getLogger("userstore")
        logger.addHandler(handler)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
