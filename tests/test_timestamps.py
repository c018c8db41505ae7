"""created_at and updated_at: set by the database, aware UTC on every backend."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import URL, select
from sqlalchemy.exc import StatementError

import userstore
from userstore import InvalidUserError, User, UserRepository
from userstore.engine import MARIADB_SESSION_SETUP
from userstore.timestamps import utc_now

SLACK = timedelta(seconds=2)
KOLKATA = ZoneInfo("Asia/Kolkata")


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


_SESSION_TIME_ZONE: dict[str, dict[str, Any]] = {
    "sqlite": {},
    "postgresql": {"options": "-c timezone=America/St_Johns"},
    "mariadb": {"init_command": MARIADB_SESSION_SETUP.replace("+00:00", "-03:30")},
}


def test_timestamps_read_back_as_utc_whatever_the_session_time_zone(
    backend: str, database_url: URL, empty_table: None, far_from_utc: None
):
    since = datetime.now(UTC)
    engine = userstore.create_engine(database_url, connect_args=_SESSION_TIME_ZONE[backend])
    try:
        with userstore.create_session_factory(engine)() as session:
            repo = UserRepository(session)
            repo.add(User(name="Jenny", number=1))
            repo.commit()
            jenny = repo.get_one("Jenny")
            _assert_recent_utc(jenny.created_at, since)
            _assert_recent_utc(jenny.updated_at, since)
    finally:
        engine.dispose()


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


def test_a_naive_datetime_in_a_query_is_refused(repo: UserRepository):
    with pytest.raises(StatementError, match="timezone-aware"):
        repo.session.scalars(select(User).where(User.created_at > datetime(2026, 1, 1))).all()


def test_utc_now_renders_for_each_backend_and_generically():
    assert str(select(utc_now())) == "SELECT CURRENT_TIMESTAMP AS utc_now_1"
