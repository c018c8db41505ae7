"""created_at and updated_at: set by the database, aware UTC on every backend.

A stamp is the time the statement that wrote the row ran, on every backend (not
the transaction's start, which PostgreSQL's now() would give); the database's
clock gives milliseconds on SQLite and microseconds on PostgreSQL and MariaDB.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import URL, event, select, text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect

from tests.databases import target_name
from tests.flavours import FlavouredEngine
from userstore import InvalidUserError, User, UserRepository
from userstore.engine import MARIADB_SESSION_SETUP
from userstore.timestamps import utc_now

SLACK = timedelta(seconds=2)
KOLKATA = ZoneInfo("Asia/Kolkata")
# Statements of one unit of work sent this far apart must get stamps at least
# AT_LEAST apart (the margin absorbs SQLite's millisecond clock).
PAUSE_SECONDS = 0.05
AT_LEAST = timedelta(milliseconds=40)


def _assert_recent_utc(value: datetime, since: datetime) -> None:
    assert value.utcoffset() == timedelta(0)
    assert since - SLACK <= value <= datetime.now(UTC) + SLACK


def test_the_database_stamps_new_users_with_aware_utc_times(repo: UserRepository):
    since = datetime.now(UTC)
    repo.add(User(name="Jenny", number=1))
    repo.commit()

    jenny = repo.get_one("Jenny")

    _assert_recent_utc(jenny.created_at, since)
    assert jenny.updated_at == jenny.created_at


def test_updated_at_moves_on_an_update_through_the_repository_and_created_at_stays(
    repo: UserRepository,
):
    repo.add(User(name="Jenny", number=1))
    repo.commit()
    jenny = repo.get_one("Jenny")
    created, updated = jenny.created_at, jenny.updated_at
    time.sleep(0.05)

    jenny.number = 2
    repo.commit()

    assert jenny.created_at == created
    assert jenny.updated_at > updated


def test_assigning_a_naive_timestamp_is_refused():
    with pytest.raises(InvalidUserError, match="created_at must be timezone-aware"):
        User(name="Jenny", created_at=datetime(2026, 1, 1))


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """Run in a process time zone five and a half hours east of UTC."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


# (backend, flavour) -> the connect arguments that set a far-off session time zone.
_SESSION_TIME_ZONE: dict[tuple[str, str], dict[str, Any]] = {
    ("sqlite", "sync"): {},
    ("sqlite", "async"): {},
    ("postgresql", "sync"): {"options": "-c timezone=America/St_Johns"},
    ("postgresql", "async"): {"server_settings": {"timezone": "America/St_Johns"}},
    ("mariadb", "sync"): {"init_command": MARIADB_SESSION_SETUP.replace("+00:00", "-03:30")},
    ("mariadb", "async"): {"init_command": MARIADB_SESSION_SETUP.replace("+00:00", "-03:30")},
}


@pytest.mark.not_on_fake(
    reason=("it sets the database session's time zone through the driver's connect arguments")
)
def test_timestamps_read_back_as_utc_whatever_the_session_time_zone(
    backend: str, flavour: str, database_url: URL, empty_table: None, far_from_utc: None
):
    since = datetime.now(UTC)
    through_pgbouncer = target_name(backend) == "pgbouncer"
    # PgBouncer drops the options startup parameter, and a session SET would
    # outlive the transaction on its server connection: there the time zone is
    # set for each transaction instead.
    connect_args = {} if through_pgbouncer else _SESSION_TIME_ZONE[(backend, flavour)]
    engine = FlavouredEngine(flavour, database_url, connect_args=connect_args)
    try:
        with engine.session() as session:
            if through_pgbouncer:
                sync_session = session.wrapped.sync_session if flavour == "async" else session
                event.listen(sync_session, "after_begin", _set_local_time_zone)
            repo = engine.repository(session)
            repo.add(User(name="Jenny", number=1))
            repo.commit()
            jenny = repo.get_one("Jenny")
            _assert_recent_utc(jenny.created_at, since)
            _assert_recent_utc(jenny.updated_at, since)
            if backend != "sqlite":  # the premise: the session's time zone really is far off
                zone = session.execute(text(_SHOW_TIME_ZONE[backend])).scalar_one()
                assert zone in ("America/St_Johns", "-03:30")
    finally:
        engine.dispose()


_SHOW_TIME_ZONE: dict[str, str] = {
    "postgresql": "SHOW timezone",
    "mariadb": "SELECT @@session.time_zone",
}


def _set_local_time_zone(_session: Any, _transaction: Any, connection: Any) -> None:
    connection.exec_driver_sql("SET LOCAL TIME ZONE 'America/St_Johns'")


@pytest.mark.not_on_fake(reason="it runs the app's own SQL query on the session")
def test_timestamps_bind_in_queries_and_compare_in_time_order(repo: UserRepository):
    repo.add(User(name="early", number=1))
    repo.commit()
    cutoff = repo.get_one("early").created_at
    time.sleep(0.05)
    repo.add(User(name="late", number=2))
    repo.commit()

    later = repo.session.scalars(
        select(User.name).where(User.created_at > cutoff).order_by(User.name)
    ).all()
    since_cutoff_elsewhere = repo.session.scalars(
        select(User.name).where(User.created_at >= cutoff.astimezone(KOLKATA))
    ).all()

    assert later == ["late"]
    assert sorted(since_cutoff_elsewhere) == ["early", "late"]


@pytest.mark.not_on_fake(reason="it runs the app's own SQL query on the session")
def test_a_naive_datetime_in_a_query_is_refused_as_invalid_input(repo: UserRepository):
    with pytest.raises(InvalidUserError, match="timezone-aware"):
        repo.session.scalars(select(User).where(User.created_at > datetime(2026, 1, 1))).all()


def test_utc_now_renders_for_each_backend_and_generically():
    rendered = {
        dialect.name: str(select(utc_now()).compile(dialect=dialect))
        for dialect in (
            postgresql.dialect(),
            mysql.dialect(),
            MariaDBDialect(),
            sqlite.dialect(),
        )
    }

    assert rendered == {
        "postgresql": "SELECT statement_timestamp() AS utc_now_1",
        "mysql": "SELECT UTC_TIMESTAMP(6) AS utc_now_1",
        "mariadb": "SELECT UTC_TIMESTAMP(6) AS utc_now_1",
        "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f000', 'now') AS utc_now_1",
    }
    assert str(select(utc_now())) == "SELECT CURRENT_TIMESTAMP AS utc_now_1"


def test_each_insert_in_one_unit_of_work_is_stamped_with_the_time_its_statement_ran(
    repo: UserRepository,
):
    first = repo.add(User(name="first", number=1))
    repo.session.flush()
    time.sleep(PAUSE_SECONDS)
    second = repo.add(User(name="second", number=2))
    repo.session.flush()
    repo.commit()

    assert second.created_at - first.created_at >= AT_LEAST
    assert first.updated_at == first.created_at
    assert second.updated_at == second.created_at


def test_an_update_later_in_the_same_unit_of_work_is_stamped_with_its_own_time(
    repo: UserRepository,
):
    jenny = repo.add(User(name="Jenny", number=1))
    repo.session.flush()
    time.sleep(PAUSE_SECONDS)
    jenny.number = 2
    repo.session.flush()
    repo.commit()

    assert jenny.updated_at - jenny.created_at >= AT_LEAST


def test_upsert_many_stamps_each_row_with_the_time_its_statement_ran(repo: UserRepository):
    repo.upsert_many([("Jenny", 1)])
    time.sleep(PAUSE_SECONDS)
    result = repo.upsert_many([("Jenny", 2), ("Kenny", 3)])
    repo.commit()
    jenny, kenny = repo.get_one("Jenny"), repo.get_one("Kenny")

    assert (result.inserted, result.updated) == (1, 1)
    assert jenny.updated_at - jenny.created_at >= AT_LEAST
    assert kenny.created_at - jenny.created_at >= AT_LEAST
    assert kenny.updated_at == kenny.created_at


def _stamps_from_every_writing_path(repo: UserRepository) -> list[datetime]:
    """created_at and updated_at of rows stamped by each way userstore writes, in many statements.

    ORM inserts (one flush each) and an ORM update, add_many, and upsert_many
    inserting and updating, all committed.
    """
    users = []
    for i in range(12):
        users.append(repo.add(User(name=f"orm{i:02d}", number=i)))
        repo.session.flush()
    users[0].number = -1
    repo.add_many([("bulk", 1)])
    repo.upsert_many([("orm01", -1), ("upserted", 1)])
    repo.commit()
    return [stamp for user in repo.list() for stamp in (user.created_at, user.updated_at)]


def test_sqlite_stamps_milliseconds_and_the_servers_microseconds(
    backend: str, repo: UserRepository
):
    stamps = _stamps_from_every_writing_path(repo)

    sub_millisecond_digits = {stamp.microsecond % 1000 for stamp in stamps}
    if backend == "sqlite":
        # strftime's %f is SS.SSS; the stored text pads it with "000".
        assert sub_millisecond_digits == {0}
    else:
        # Over 16 independent statements, all-zero digits would be a one in 10**48 fluke.
        assert sub_millisecond_digits != {0}


def test_a_time_assigned_in_python_keeps_its_microseconds_on_every_backend(
    repo: UserRepository,
):
    moment = datetime(2026, 11, 25, 12, 34, 56, 123456, tzinfo=UTC)
    repo.add(User(name="Jenny", number=1, created_at=moment, updated_at=moment))
    repo.commit()
    repo.session.expire_all()

    jenny = repo.get_one("Jenny")

    assert (jenny.created_at, jenny.updated_at) == (moment, moment)
