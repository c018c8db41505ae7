"""Each row of the error table, triggered for real on its backend.

For every row: the repository call that hit the failure raises the row's
userstore error, chained from the driver's exception with the row's SQLSTATE /
driver code; afterwards the repository works without a rollback() and earlier
commits are intact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import AsyncAdaptedQueuePool

import userstore
from tests.databases import connection_id, kill_connections, migrated_database
from tests.flavours import FlavouredEngine
from userstore import TransientDatabaseError, User, UserRepository, UserStoreError
from userstore.db_errors import (
    ERROR_RULES,
    NO_CODE_WHILE_CONNECTING,
    ErrorRule,
    backend_of,
    driver_error_code,
)
from userstore.engine import MARIADB_SESSION_SETUP


class Live:
    """Repositories of the flavour under test on a fresh migrated database of one backend."""

    def __init__(self, url: URL, stack: ExitStack, flavour: str) -> None:
        self.url = url
        self.flavour = flavour
        self._stack = stack
        self.engine = self.new_engine()
        plain = userstore.create_engine(url)
        with plain.begin() as connection:
            connection.execute(text("DELETE FROM users"))
        plain.dispose()
        self.repo = self.new_repo()
        self.repo.add(User(name="committed", number=1))
        self.repo.commit()

    def new_engine(self, url: URL | None = None, **kwargs: Any) -> FlavouredEngine:
        engine = FlavouredEngine(self.flavour, url or self.url, **kwargs)
        self._stack.callback(engine.dispose)
        return engine

    def new_repo(self, engine: FlavouredEngine | None = None) -> UserRepository:
        engine = engine or self.engine
        session = engine.session()
        self._stack.callback(session.close)
        return engine.repository(session)  # type: ignore[no-any-return]

    def postgresql_settings(self, **settings: str) -> dict[str, Any]:
        """Connect arguments that set PostgreSQL settings, in this flavour's driver's terms."""
        if self.flavour == "async":  # asyncpg
            return {"server_settings": settings}
        return {"options": " ".join(f"-c {name}={value}" for name, value in settings.items())}

    def kill(self, repo: UserRepository) -> None:
        """Kill the server connection under ``repo``'s open transaction."""
        server_id = connection_id(repo.session.connection(), self.dialect)
        kill_connections(self.url, self.dialect, {server_id})

    @property
    def dialect(self) -> str:
        return backend_of(self.engine.sync_engine.dialect.name)


def _duplicate(live: Live) -> UserStoreError:
    live.repo.add(User(name="committed", number=2))
    return _raised(live.repo.commit)


def _serialization_failure(live: Live) -> UserStoreError:
    serializable = live.new_engine(isolation_level="SERIALIZABLE")
    first, second = live.new_repo(serializable), live.new_repo(serializable)
    first.count()
    second.count()
    first.add(User(name="a", number=first.count()))
    second.add(User(name="b", number=second.count()))
    first.commit()
    return _raised(second.commit)


def _deadlock(live: Live) -> UserStoreError:
    live.repo.add(User(name="x", number=0))
    live.repo.add(User(name="y", number=0))
    live.repo.commit()
    both_hold_one = threading.Barrier(2, timeout=30)
    errors: list[UserStoreError] = []

    def update(repo: UserRepository, first: str, then: str) -> None:
        try:
            repo.get_one(first).number = 1
            repo.count()  # autoflush: the UPDATE takes the row lock
            both_hold_one.wait()
            repo.get_one(then).number = 1
            repo.commit()
        except UserStoreError as error:
            errors.append(error)

    threads = [
        threading.Thread(target=update, args=(live.new_repo(), "x", "y")),
        threading.Thread(target=update, args=(live.new_repo(), "y", "x")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(errors) == 1, errors  # the database picks one victim; the other commits
    return errors[0]


def _lock_held_elsewhere(live: Live, **engine_options: Any) -> UserStoreError:
    live.repo.get_one("committed").number = 5
    live.repo.count()  # autoflush: the UPDATE holds the row lock
    waiter = live.new_repo(live.new_engine(**engine_options))
    waiter.get_one("committed").number = 6
    error = _raised(waiter.count)
    live.repo.rollback()
    return error


def _lock_timeout(live: Live) -> UserStoreError:
    if live.dialect == "postgresql":
        return _lock_held_elsewhere(live, connect_args=live.postgresql_settings(lock_timeout="200"))
    setup = f"{MARIADB_SESSION_SETUP}, innodb_lock_wait_timeout = 1"
    return _lock_held_elsewhere(live, connect_args={"init_command": setup})


def _statement_timeout(live: Live) -> UserStoreError:
    return _lock_held_elsewhere(
        live, connect_args=live.postgresql_settings(statement_timeout="200")
    )


def _killed_connection(live: Live) -> UserStoreError:
    live.repo.add(User(name="lost", number=1))
    live.repo.count()  # the INSERT is sent, in an open transaction
    live.kill(live.repo)
    return _raised(live.repo.commit)


def _sqlite_busy(live: Live) -> UserStoreError:
    live.repo.add(User(name="writing", number=1))
    live.repo.count()  # autoflush: this session now holds the write lock
    impatient = live.new_repo(live.new_engine(connect_args={"timeout": 0.2}))
    impatient.add(User(name="waiting", number=1))
    error = _raised(impatient.commit)  # waits 0.2 s for the lock, then gives up
    live.repo.rollback()
    return error


def _sqlite_stale_snapshot(live: Live) -> UserStoreError:
    reader = live.new_repo()
    assert reader.count() == 1  # a read transaction: its snapshot is taken here
    live.repo.add(User(name="meanwhile", number=1))
    live.repo.commit()  # another writer commits after that snapshot
    reader.add(User(name="late", number=reader.count()))
    error = _raised(reader.commit)  # writing on a stale snapshot: refused at once
    live.repo.delete("meanwhile")
    live.repo.commit()
    return error


def _unreachable(live: Live) -> UserStoreError:
    nobody_listens = live.url.set(host="127.0.0.1", port=1)
    return _raised(live.new_repo(live.new_engine(nobody_listens)).count)


TRIGGERS: dict[tuple[str, object], Callable[[Live], UserStoreError]] = {
    ("postgresql", "23505"): _duplicate,
    ("postgresql", "40001"): _serialization_failure,
    ("postgresql", "40P01"): _deadlock,
    ("postgresql", "55P03"): _lock_timeout,
    ("postgresql", "57014"): _statement_timeout,
    ("postgresql", "57P01"): _killed_connection,
    ("postgresql", NO_CODE_WHILE_CONNECTING): _unreachable,
    ("mariadb", 1062): _duplicate,
    ("mariadb", 1205): _lock_timeout,
    ("mariadb", 1213): _deadlock,
    ("mariadb", 2013): _killed_connection,
    ("mariadb", 2003): _unreachable,
    ("sqlite", "SQLITE_CONSTRAINT_PRIMARYKEY"): _duplicate,
    ("sqlite", "SQLITE_BUSY"): _sqlite_busy,
    ("sqlite", "SQLITE_BUSY_SNAPSHOT"): _sqlite_stale_snapshot,
}


def _raised(call: Callable[[], object]) -> UserStoreError:
    with pytest.raises(UserStoreError) as raised:
        call()
    return raised.value


@pytest.fixture
def live_on(tmp_path: Path, flavour: str) -> Iterator[Callable[[str], Live]]:
    with ExitStack() as stack:

        def open_live(backend: str) -> Live:
            url = stack.enter_context(migrated_database(backend, tmp_path / backend))
            return Live(url, stack, flavour)

        yield open_live


def _assert_usable_and_intact(live: Live) -> None:
    live.repo.add(User(name="afterwards", number=2))
    live.repo.commit()
    assert live.repo.get_one("committed").number == 1
    assert live.repo.exists("afterwards")


def test_every_rule_has_a_live_trigger():
    assert set(TRIGGERS) == {(rule.backend, rule.code) for rule in ERROR_RULES}


@pytest.mark.parametrize("rule", ERROR_RULES, ids=lambda r: f"{r.backend}-{r.code}-{r.meaning}")
def test_each_table_row_is_raised_as_its_userstore_error(
    rule: ErrorRule, live_on: Callable[[str], Live]
):
    live = live_on(rule.backend)

    error = TRIGGERS[(rule.backend, rule.code)](live)

    assert type(error) is rule.maps_to
    codes = [driver_error_code(cause, rule.backend) for cause in _causes(error)]
    expected = {None if rule.code == NO_CODE_WHILE_CONNECTING else rule.code}
    expected |= _ALSO_REPORTED.get((live.flavour, rule.backend, rule.code), set())
    assert expected & set(codes[1:])  # a driver exception in the chain carries the code
    _assert_usable_and_intact(live)


# A killed connection, as the async drivers may report it: they can find the socket closed
# before reading the server's farewell (asyncpg: no SQLSTATE; asyncmy: 2006, server gone).
# Still transient: SQLAlchemy invalidates the connection, and the table's fallback applies.
_ALSO_REPORTED: dict[tuple[str, str, object], set[object]] = {
    ("async", "postgresql", "57P01"): {None},
    ("async", "mariadb", 2013): {2006},
}


def _causes(error: BaseException) -> list[BaseException]:
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_pool_with_no_free_connection_in_time_is_transient(
    backend: str, live_on: Callable[[str], Live]
):
    live = live_on(backend)
    queue = {"poolclass": AsyncAdaptedQueuePool} if live.flavour == "async" else {}  # (2.0: Null)
    tiny_pool = live.new_engine(pool_size=1, max_overflow=0, pool_timeout=0.2, **queue)
    holder, waiter = live.new_repo(tiny_pool), live.new_repo(tiny_pool)
    holder.get("committed")  # checks the only connection out

    error = _raised(lambda: waiter.get("committed"))
    holder.rollback()

    assert isinstance(error, TransientDatabaseError)
    assert isinstance(error.__cause__, sa_exc.TimeoutError)
    assert waiter.get_one("committed").number == 1
