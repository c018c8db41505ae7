"""A Galera node killed under a unit of work: one transient error, and the retry lands elsewhere.

The app's URL names the three nodes; its unit of work, run by
``run_unit_of_work``, is mid-way on one of them when that node's server is
killed (``kill -9``, as a crash would). The work fails once with a
TransientDatabaseError, the runner runs it again, the new connection skips
the dead node, and the retry commits on a live one; nothing committed
before is lost. The time from the kill to the committed retry is printed
(``-s``) and recorded as a property. The node is brought back with
``bash .ci/clusters up`` (it rejoins by IST) before the test ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import sqlalchemy
from sqlalchemy import URL, text

import userstore
from tests import clusters
from tests.clusters import RetryLog
from tests.databases import require_target, throwaway_database
from userstore import AsyncUserRepository, User, UserRepository

pytestmark = pytest.mark.skipif(
    os.environ.get("USERSTORE_ALLOW_SERVER_RESTARTS") != "1",
    reason="kills a Galera node of the cluster (and restarts it): "
    "USERSTORE_ALLOW_SERVER_RESTARTS=1 allows it",
)

ROOT: Final = Path(__file__).resolve().parent.parent
# The script that starts the cluster, and its data directory (pid files): a cluster
# moved elsewhere (USERSTORE_TEST_GALERA<n>_URL) comes with a script of its own.
CLUSTERS_SCRIPT: Final = os.environ.get(
    "USERSTORE_TEST_CLUSTERS_SCRIPT", str(ROOT / ".ci/clusters")
)
GALERA_DIR: Final = (
    Path(os.environ.get("USERSTORE_CLUSTER_DIR", "/tmp/userstore-clusters")) / "galera"
)
PORTS: Final = [int(url.port or 3306) for url in clusters.GALERA_URLS]
EARLIER: Final = 500  # users committed before the node dies


def _restart_the_cluster() -> None:
    """Bring every node back and return once all three are Synced in one cluster."""
    subprocess.run(["bash", CLUSTERS_SCRIPT, "up"], check=True, capture_output=True, timeout=600)
    deadline = time.monotonic() + 120
    while not all(_synced(url) for url in clusters.GALERA_URLS):
        assert time.monotonic() < deadline, "the Galera cluster did not come back Synced"
        time.sleep(0.5)


def _synced(url: URL) -> bool:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            status = dict(
                connection.exec_driver_sql(
                    "SHOW STATUS WHERE Variable_name IN "
                    "('wsrep_local_state_comment', 'wsrep_cluster_size')"
                ).all()
            )
    except sqlalchemy.exc.OperationalError:
        return False
    finally:
        engine.dispose()
    return status == {"wsrep_local_state_comment": "Synced", "wsrep_cluster_size": "3"}


@pytest.fixture
def retry_log() -> Iterator[RetryLog]:
    with RetryLog.listening() as log:
        yield log


@pytest.fixture
def galera_database(tmp_path: Path) -> Iterator[str]:
    """A migrated database on the cluster; every node is up and Synced again afterwards."""
    require_target("galera")
    with throwaway_database("galera", tmp_path) as url:
        userstore.migrations.upgrade(url)
        try:
            yield str(url.database)
        finally:
            _restart_the_cluster()  # before the database is dropped through the first node


def _multi_host_url(database: str) -> str:
    # The last node first: the unit of work starts there, so the node killed is not the
    # one other tests create their databases on.
    hosts = "&".join(f"host=127.0.0.1:{port}" for port in reversed(PORTS))
    return f"mariadb://root@/{database}?{hosts}"


def _kill(port: int) -> float:
    """``kill -9`` the node listening on ``port``; return the time, once the process is gone."""
    pid = int((GALERA_DIR / f"node{PORTS.index(port)}.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    deadline = killed_at + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return killed_at
        assert time.monotonic() < deadline, f"mariadbd {pid} outlived kill -9"
        time.sleep(0.01)


def _stored(database: str, alive_port: int) -> dict[str, int | None]:
    url = clusters.GALERA_URLS[PORTS.index(alive_port)].set(database=database)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(clusters.GALERA_CAUSALITY)
            return dict(connection.execute(text("SELECT name, number FROM users")).all())
    finally:
        engine.dispose()


def _expected(new: str) -> dict[str, int | None]:
    return {
        **{f"earlier {i:04d}": i for i in range(EARLIER)},
        **{f"{new} {i:03d}": i for i in range(100)},
        f"{new} last": None,
    }


def test_a_node_killed_under_a_unit_of_work_costs_one_retry_that_lands_on_a_live_node(
    galera_database: str, retry_log: RetryLog, record_property: pytest.RecordProperty
):
    engine = userstore.create_engine(_multi_host_url(galera_database))
    factory = userstore.create_session_factory(engine)
    ports: list[int] = []
    killed_at: list[float] = []

    def work(repo: UserRepository) -> int:
        port = int(repo.session.execute(text("SELECT @@port")).scalar_one())
        ports.append(port)
        repo.add_many([(f"new {i:03d}", i) for i in range(100)])
        if not killed_at:
            killed_at.append(_kill(port))
        repo.add(User(name="new last", number=None))
        assert repo.count() == EARLIER + 101  # (the first attempt's connection is dead here)
        return port

    try:
        userstore.run_unit_of_work(
            factory, lambda repo: repo.add_many((f"earlier {i:04d}", i) for i in range(EARLIER))
        )
        landed_on = userstore.run_unit_of_work(factory, work, attempts=5, backoff=0.05)
        landed_at = time.monotonic()
    finally:
        engine.dispose()

    failover = landed_at - killed_at[0]
    record_property("galera_failover_seconds", round(failover, 3))
    print(f"sync: node {ports[0]} killed; its retry committed on {landed_on} {failover:.3f}s later")
    assert ports == [ports[0], landed_on]
    assert landed_on != ports[0]
    assert len(retry_log.retries) == 1
    (retry,) = retry_log.retries
    assert retry.userstore_error in ("TransientDatabaseError", "DatabaseUnavailableError")  # type: ignore[attr-defined]
    assert retry.userstore_stage == "in the work"  # type: ignore[attr-defined]
    assert _stored(galera_database, landed_on) == _expected("new")


def test_an_async_unit_of_work_survives_its_node_being_killed_the_same_way(
    galera_database: str, retry_log: RetryLog, record_property: pytest.RecordProperty
):
    ports: list[int] = []
    killed_at: list[float] = []

    async def work(repo: AsyncUserRepository) -> int:
        result = await repo.session.execute(text("SELECT @@port"))
        port = int(result.scalar_one())
        ports.append(port)
        await repo.add_many([(f"async {i:03d}", i) for i in range(100)])
        if not killed_at:
            killed_at.append(_kill(port))
        await repo.add(User(name="async last", number=None))
        assert await repo.count() == EARLIER + 101
        return port

    async def run() -> tuple[int, float]:
        engine = userstore.create_async_engine(_multi_host_url(galera_database))
        factory = userstore.create_async_session_factory(engine)
        try:

            async def earlier(repo: AsyncUserRepository) -> int:
                return await repo.add_many((f"earlier {i:04d}", i) for i in range(EARLIER))

            await userstore.run_unit_of_work_async(factory, earlier)
            port = await userstore.run_unit_of_work_async(factory, work, attempts=5, backoff=0.05)
            return port, time.monotonic()
        finally:
            await engine.dispose()

    landed_on, landed_at = asyncio.run(run())
    failover = landed_at - killed_at[0]
    record_property("galera_async_failover_seconds", round(failover, 3))
    print(f"async: node {ports[0]} killed; its retry committed on {landed_on} {failover:.3f}s")
    assert ports == [ports[0], landed_on]
    assert landed_on != ports[0]
    assert len(retry_log.retries) == 1
    assert _stored(galera_database, landed_on) == _expected("async")
