"""Replicated topologies for the read-routing tests, on the clusters of .ci/clusters.

``pg-replica``: the PostgreSQL primary (5441) and its hot standby (5442).
``galera``: the first Galera node (3311) takes the writes, the other two
(3312, 3313) serve reads. ``mariadb-replica``: a plain MariaDB primary (3321)
and its asynchronous replica (3322). A throwaway database is created on the primary and
reaches the replicas by replication.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import sqlalchemy
from sqlalchemy import URL

from tests.clusters import GALERA_URLS, MARIADB_REPLICA_URL, PG_STANDBY_URL
from tests.databases import throwaway_database

REPLICA_URLS: Final = {
    "pg-replica": [PG_STANDBY_URL],
    "galera": list(GALERA_URLS[1:]),
    "mariadb-replica": [MARIADB_REPLICA_URL],
}
"""The replicas of each topology; its primary is where tests.databases creates databases."""
# How far behind the replicas fall while slowed: PostgreSQL's standby applies
# each commit this late; a Galera node's applier is held this long, again and again.
LAG_SECONDS: Final = 0.03


@dataclass
class Cluster:
    """One replicated topology: what its tests need to slow its replicas down."""

    name: str
    replica_urls: list[URL]

    @contextlib.contextmanager
    def slowed_replicas(self, primary_url: URL) -> Iterator[None]:
        """Make every replica lag behind the primary while the block runs."""
        if self.name == "pg-replica":
            with _recovery_delay(self.replica_urls):
                yield
        else:
            with _held_appliers(self.replica_urls, galera=self.name == "galera"):
                yield


def _admin(url: URL) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool
    )


@contextlib.contextmanager
def _recovery_delay(replica_urls: list[URL]) -> Iterator[None]:
    def set_delay(value: str) -> None:
        for url in replica_urls:
            engine = _admin(url)
            with engine.connect() as connection:
                connection.exec_driver_sql(f"ALTER SYSTEM SET recovery_min_apply_delay = '{value}'")
                connection.exec_driver_sql("SELECT pg_reload_conf()")
            engine.dispose()

    set_delay(f"{int(LAG_SECONDS * 1000)}ms")
    time.sleep(0.2)  # the reload is asynchronous
    try:
        yield
    finally:
        set_delay("0")


@contextlib.contextmanager
def _held_appliers(replica_urls: list[URL], *, galera: bool) -> Iterator[None]:
    """Hold each replica's applier with FLUSH TABLES WITH READ LOCK, on and off.

    A Galera node is desynced first, so the cluster's flow control does not
    stop the primary while a replica's applier waits; an asynchronous
    replica's SQL thread simply waits (reads are not blocked on either).
    """
    stop = threading.Event()
    errors: list[BaseException] = []

    def hold(url: URL) -> None:
        engine = _admin(url)
        try:
            with engine.connect() as connection:
                if galera:
                    connection.exec_driver_sql("SET GLOBAL wsrep_desync = ON")
                try:
                    while not stop.is_set():
                        connection.exec_driver_sql("FLUSH TABLES WITH READ LOCK")
                        time.sleep(LAG_SECONDS)
                        connection.exec_driver_sql("UNLOCK TABLES")
                        time.sleep(LAG_SECONDS / 3)
                finally:
                    connection.exec_driver_sql("UNLOCK TABLES")
                    if galera:
                        connection.exec_driver_sql("SET GLOBAL wsrep_desync = OFF")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=hold, args=(url,), daemon=True) for url in replica_urls]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def cluster_database(name: str) -> Iterator[tuple[Cluster, URL, list[URL]]]:
    """Create a throwaway database on topology ``name``; yield it, its primary and replica URLs.

    Skips unless the topology is under test and answers (fails if it is required).
    """
    with throwaway_database(name, Path(tempfile.gettempdir())) as primary:
        replicas = [url.set(database=primary.database) for url in REPLICA_URLS[name]]
        yield Cluster(name, replicas), primary, replicas
