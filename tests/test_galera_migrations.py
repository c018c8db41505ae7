"""Migrations on Galera: one migrator at a time across the cluster, not per node.

``GET_LOCK`` holds on one node only, so two processes migrating through two
nodes would both run every revision. On a Galera node the lock is a row of
``userstore_migration_lock`` (with a lease, renewed as the migration goes);
whoever waited finds nothing left to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from alembic.script import ScriptDirectory
from sqlalchemy import URL, inspect, text

import userstore
from tests import clusters
from tests.databases import migrated_database, require_target, throwaway_database
from userstore import MigrationError, TransientDatabaseError, galera, migrations
from userstore.migration_env import VERSION_TABLE

# One migrator: says it is ready (imports done), waits for the go file, migrates, and reports
# when it started and ended and what Alembic ran (its "Running upgrade" records), as JSON.
MIGRATOR = """
import asyncio, json, logging, sys, time
from pathlib import Path
from userstore import migrations

class Ran(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []
    def emit(self, record):
        if record.getMessage().startswith("Running upgrade"):
            self.lines.append([time.time(), record.getMessage()])

ran = Ran()
alembic_logger = logging.getLogger("alembic.runtime.migration")
alembic_logger.setLevel(logging.INFO)
alembic_logger.addHandler(ran)
url, go, flavour, ready = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
ready.touch()
while not go.exists():
    time.sleep(0.002)
started = time.time()
if flavour == "async":
    asyncio.run(migrations.upgrade_async(url))
else:
    migrations.upgrade(url)
ended = time.time()
print(json.dumps({"started": started, "ended": ended, "ran": ran.lines,
                  "revision": migrations.current(url)}))
"""


@pytest.fixture
def galera_url(tmp_path: Path) -> Iterator[URL]:
    """An empty database on the Galera cluster (the first node's URL)."""
    require_target("galera")
    with throwaway_database("galera", tmp_path) as url:
        yield url


def _node_urls(url: URL) -> list[URL]:
    return clusters.galera_urls(str(url.database))


def _tables(url: URL) -> set[str]:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _sql(url: URL, statement: str) -> list[tuple[object, ...]]:
    engine = sqlalchemy.create_engine(
        url, poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(clusters.GALERA_CAUSALITY)
            result = connection.exec_driver_sql(statement)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_three_processes_migrating_through_three_nodes_at_once_migrate_once(
    galera_url: URL, tmp_path: Path
):
    go = tmp_path / "go"
    flavours = ["sync", "async", "sync"]
    ready = [tmp_path / f"ready{node}" for node in range(3)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATOR, url.render_as_string(False), str(go), flavour, str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url, flavour, r in zip(_node_urls(galera_url), flavours, ready, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(path.exists() for path in ready):  # every process has imported userstore
        assert time.monotonic() < deadline, "the migrators did not start"
        time.sleep(0.01)
    go.touch()
    outcomes = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
        outcomes.append(json.loads(stdout))

    migrators = [outcome for outcome in outcomes if outcome["ran"]]
    assert len(migrators) == 1, outcomes
    (migrator,) = migrators
    assert [message.partition(",")[0] for _, message in migrator["ran"]] == _every_step()
    last_step = migrator["ran"][-1][0]
    for waiter in outcomes:
        assert waiter["revision"] == migrations.head()
        if waiter is not migrator:
            assert waiter["started"] < last_step < waiter["ended"]  # it waited for the migrator
    for url in _node_urls(galera_url):
        assert migrations.current(url) == migrations.head()
        migrations.check(url)  # the lock's table is no drift
    assert _tables(galera_url) == {"users", VERSION_TABLE, galera.LOCK_TABLE}
    assert _sql(galera_url, f"SELECT * FROM {galera.LOCK_TABLE}") == []  # released


def _every_step() -> list[str]:
    """What Alembic logs for each revision of an upgrade from nothing to head."""
    scripts = ScriptDirectory(str(migrations.script_location()))
    revisions = reversed(list(scripts.walk_revisions()))
    return [f"Running upgrade {r.down_revision or ''} -> {r.revision}" for r in revisions]


def _leave_lock(url: URL, seconds_left: float) -> None:
    """Leave the lock's row as a crashed migrator would, its lease ending in ``seconds_left``."""
    _sql(url, galera._CREATE_LOCK_TABLE.text)
    _sql(
        url,
        f"INSERT INTO {galera.LOCK_TABLE} (name, holder, expires_at) VALUES "
        f"('userstore.migrations', 'crashed:1:0', "
        f"UTC_TIMESTAMP(6) + INTERVAL {int(seconds_left * 1_000_000)} MICROSECOND)",
    )


def test_a_lock_whose_lease_ran_out_is_taken_at_once(galera_url: URL):
    node1, node2, _ = _node_urls(galera_url)
    _leave_lock(node1, -1)
    started = time.monotonic()
    migrations.upgrade(node2)
    assert time.monotonic() - started < 10
    assert migrations.current(node2) == migrations.head()
    assert _sql(node1, f"SELECT holder FROM {galera.LOCK_TABLE}") == []


def test_a_held_lock_is_waited_for_until_its_holder_goes_or_its_lease_runs_out(galera_url: URL):
    node1, _, node3 = _node_urls(galera_url)
    _leave_lock(node1, 3)
    started = time.monotonic()
    migrations.upgrade(node3)
    waited = time.monotonic() - started
    assert 2.5 < waited < 30
    assert migrations.current(node1) == migrations.head()


def test_a_migrator_gives_up_after_its_timeout_with_a_transient_error(galera_url: URL):
    node1, node2, _ = _node_urls(galera_url)
    _leave_lock(node1, 600)
    engine = userstore.create_engine(node2)
    try:
        with (
            engine.connect() as connection,
            pytest.raises(
                TransientDatabaseError, match="gave up waiting 1s for the migration lock"
            ),
            galera.cluster_migration_lock(connection, timeout=1),
        ):
            pass
    finally:
        engine.dispose()
    assert _sql(node1, f"SELECT holder FROM {galera.LOCK_TABLE}") == [("crashed:1:0",)]


def test_the_holder_renews_its_lease_as_the_migration_goes(
    galera_url: URL, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(galera, "_RENEW_AFTER_SECONDS", 0)
    engine = userstore.create_engine(_node_urls(galera_url)[0])
    expiry = f"SELECT expires_at FROM {galera.LOCK_TABLE}"
    try:
        with engine.connect() as connection, galera.cluster_migration_lock(connection, 10):
            (first,) = _sql(galera_url, expiry)
            time.sleep(0.05)
            connection.execute(text("SELECT 1"))  # a statement of the migration renews it
            (renewed,) = _sql(galera_url, expiry)
            assert renewed > first
    finally:
        engine.dispose()


def test_a_holder_whose_lease_was_taken_stops_at_its_next_statement(
    galera_url: URL, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(galera, "_RENEW_AFTER_SECONDS", 0)
    node1, node2, _ = _node_urls(galera_url)
    engine = userstore.create_engine(node1)
    try:
        with engine.connect() as connection, galera.cluster_migration_lock(connection, 10):
            _sql(node2, f"DELETE FROM {galera.LOCK_TABLE}")  # as a claim after a lapsed lease does
            with pytest.raises(MigrationError, match=r"lease \(300s\) ran out while this"):
                connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def test_a_mariadb_server_without_galera_keeps_get_lock_and_makes_no_lock_table(
    tmp_path: Path,
):
    with migrated_database("mariadb", tmp_path) as url:
        assert _tables(url) == {"users", VERSION_TABLE}
