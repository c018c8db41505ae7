"""Promoting the PostgreSQL standby: what the app sees, and what it must change.

The primary dies (``pg_ctl stop -m immediate``, as a crash would), the hot
standby is promoted (``pg_ctl promote``). An app whose URL names both servers
with ``target_session_attrs=read-write`` (libpq's multi-host URL, which
userstore passes through on psycopg and asyncpg) sees
``DatabaseUnavailableError`` while no server accepts writes, and its retried
unit of work lands on the promoted server: it changes nothing. An app whose URL
names only the old primary keeps failing until its URL changes. The figures
are printed (``-s``) and quoted in README.md's "Scaling out".
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import sqlalchemy
from sqlalchemy import URL, make_url, text

import userstore
from tests.replication import cluster_database
from userstore import DatabaseUnavailableError, User, UserRepository, run_unit_of_work

pytestmark = pytest.mark.skipif(
    os.environ.get("USERSTORE_ALLOW_SERVER_RESTARTS") != "1",
    reason="stops and promotes the cluster's PostgreSQL servers: "
    "USERSTORE_ALLOW_SERVER_RESTARTS=1 allows it",
)

ROOT: Final = Path(__file__).resolve().parent.parent
PG_DATA: Final = (
    Path(os.environ.get("USERSTORE_CLUSTER_DIR", "/tmp/userstore-clusters")) / "postgresql"
)
PROMOTE_AFTER: Final = 1.0  # seconds an operator (or Patroni) takes to decide


def _pg_ctl(*args: str) -> None:
    pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(pg_ctl), *args], check=True, capture_output=True
    )


@pytest.fixture
def failover_database() -> Iterator[URL]:
    with cluster_database("pg-replica") as (_cluster, primary_url, _replica_urls):
        engine = userstore.create_engine(primary_url)
        userstore.migrations.upgrade(engine)
        engine.dispose()
        try:
            yield primary_url
        finally:
            # The old primary comes back; the promoted standby is rebuilt from it.
            subprocess.run(
                ["bash", str(ROOT / ".ci/clusters"), "rebuild-standby"],
                check=True,
                capture_output=True,
            )


def _replayed_everything(primary_url: URL) -> None:
    engine = sqlalchemy.create_engine(primary_url, poolclass=sqlalchemy.NullPool)
    deadline = time.monotonic() + 30
    with engine.connect() as connection:
        while (
            connection.execute(
                text("SELECT bool_and(replay_lsn >= pg_current_wal_lsn()) FROM pg_stat_replication")
            ).scalar()
            is not True
        ):
            assert time.monotonic() < deadline, "the standby never caught up"
            time.sleep(0.05)
    engine.dispose()


def test_promoting_the_standby_costs_the_app_only_retries_when_its_url_names_both(
    failover_database: URL,
) -> None:
    both = make_url(
        f"postgresql+psycopg://postgres@/{failover_database.database}"
        "?host=127.0.0.1:5441&host=127.0.0.1:5442&target_session_attrs=read-write"
    )
    app = userstore.create_engine(both, connect_args={"connect_timeout": 2})
    old_only = userstore.create_engine(failover_database, connect_args={"connect_timeout": 2})
    factory = userstore.create_session_factory(app)
    run_unit_of_work(factory, lambda repo: repo.add_many([(f"before{i}", i) for i in range(100)]))
    _replayed_everything(failover_database)  # asynchronous replication: see README

    failures: list[BaseException] = []

    def work(repo: UserRepository) -> None:
        try:
            repo.add(User(name="after", number=1))
            repo.session.flush()
        except DatabaseUnavailableError as exc:
            failures.append(exc)
            raise

    killed = time.monotonic()
    _pg_ctl("-D", str(PG_DATA / "primary"), "-m", "immediate", "-w", "stop")
    promoter = threading.Timer(
        PROMOTE_AFTER, _pg_ctl, ["-D", str(PG_DATA / "standby"), "-w", "promote"]
    )
    promoter.start()
    try:
        run_unit_of_work(factory, work, attempts=100, backoff=0.05, max_backoff=0.2)
        landed = time.monotonic() - killed
        # The app whose URL names only the old primary: no server there, whatever it retries.
        with pytest.raises(DatabaseUnavailableError), old_only.connect():
            pass
    finally:
        promoter.join()
        app.dispose()
        old_only.dispose()
    print(
        f"primary killed; standby promoted after {PROMOTE_AFTER:.1f} s; the unit of work "
        f"failed {len(failures)} times with DatabaseUnavailableError and landed "
        f"{landed:.2f} s after the kill ({landed - PROMOTE_AFTER:.2f} s after the promotion)"
    )
    assert failures, "the unit of work never saw the primary gone"
    assert all(isinstance(f, userstore.TransientDatabaseError) for f in failures)
    promoted = userstore.create_engine(both)
    with userstore.create_session_factory(promoted)() as session:
        repo = UserRepository(session)
        assert repo.count() == 101  # nothing committed before the kill was lost
        assert repo.get_one("after").number == 1
        port = session.execute(text("SELECT inet_server_port()")).scalar()
    promoted.dispose()
    assert port == 5442
