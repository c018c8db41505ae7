"""run_unit_of_work and run_unit_of_work_async: transient failures retried, every other one not.

The transient failures are the databases' own: a serialization failure, a deadlock, a busy
SQLite database, a killed connection, a server that cannot be reached. Each test runs on the
backend under test (those that need no real database on the in-memory fake too, as its
``store.repository`` source) and in both flavours: a work is written once, as plain calls on a
repository, and :class:`Runner` hands it to the runner of the flavour under test (see there).
What was committed is read back with plain SQL (on the fake: from its store).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy
from sqlalchemy import URL, Engine, event, make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import sessionmaker

import userstore
import userstore.asyncio.unit_of_work as async_runner_module
import userstore.unit_of_work as runner_module
from tests.async_support import async_engine_and_sessions, checked_out
from tests.conftest import MEMORY, StatementLog
from tests.databases import connection_id, kill_connections, migrated_database, stored_users
from tests.flavours import LOOP, Blocking, FlavouredEngine, FlavouredStore
from tests.test_readme import readme_blocks
from userstore import (
    AsyncUserRepository,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DuplicateUserError,
    InvalidUserError,
    TransientDatabaseError,
    User,
    UserNotFoundError,
    UserRepository,
    run_unit_of_work,
    run_unit_of_work_async,
)
from userstore.db_errors import backend_of, driver_error_code
from userstore.testing import AsyncInMemoryUserRepository, InMemoryUserStore

_T = TypeVar("_T")
Work = Callable[[UserRepository], _T]


class Runner:
    """The runner of the flavour under test, given works written once as plain calls.

    Sync: ``run_unit_of_work`` on userstore's session factory, as an app calls it (on the
    in-memory fake: on ``store.repository``). Async: ``run_unit_of_work_async`` on the async
    session factory (on the fake: ``store.async_repository``), awaited on the suite's loop
    (tests/flavours.py); the work it awaits runs the plain calls in a worker thread, on a
    blocking view of the real async repository, whose coroutines are awaited on that same
    loop. Either way the runner under test opens, commits, rolls back, closes and retries
    for real.
    """

    def __init__(self, target: FlavouredEngine | FlavouredStore) -> None:
        self.target = target

    def __call__(self, work: Work[_T], **options: Any) -> _T:
        target = self.target
        if target.flavour == "sync":
            return run_unit_of_work(self._source(), work, **options)

        async def awaitable_work(repo: AsyncUserRepository) -> _T:
            return await asyncio.to_thread(work, Blocking(repo))

        return LOOP.run(run_unit_of_work_async(self._source(), awaitable_work, **options))

    def _source(self) -> Any:
        """What an app hands the runner: its session factory, or the fake's repository maker."""
        target = self.target
        if isinstance(target, FlavouredStore):
            store = target.store
            return store.repository if target.flavour == "sync" else store.async_repository
        engine = target.engine
        if isinstance(engine, Engine):
            return userstore.create_session_factory(engine)
        return userstore.create_async_session_factory(engine)


@pytest.fixture
def run(flavoured_engine: FlavouredEngine | FlavouredStore) -> Runner:
    """The runner of the flavour under test, on the backend's shared database (or the fake)."""
    return Runner(flavoured_engine)


@pytest.fixture
def sync_source(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """What an app hands the sync runner: the session factory, or the fake's ``repository``.

    On a database, every connection must be back in the pool after the test.
    """
    if backend == MEMORY:
        yield request.getfixturevalue("memory_store").repository
        return
    engine: Engine = request.getfixturevalue("engine")
    yield userstore.create_session_factory(engine)
    assert engine.pool.checkedout() == 0


@pytest.fixture
def async_source(
    backend: str, request: pytest.FixtureRequest
) -> Callable[[], AbstractAsyncContextManager[Callable[[], Any]]]:
    """Return a function that opens what an app hands the async runner, inside a loop.

    On a database: an async engine's session factory; the engine is disposed on leaving,
    once every connection is back in the pool. On the fake: ``store.async_repository``.
    """
    if backend == MEMORY:
        store = request.getfixturevalue("memory_store")

        @asynccontextmanager
        async def fake_repositories() -> AsyncIterator[Callable[[], Any]]:
            yield store.async_repository

        return fake_repositories
    url = request.getfixturevalue("database_url")

    @asynccontextmanager
    async def session_factory() -> AsyncIterator[Callable[[], Any]]:
        async with async_engine_and_sessions(url) as (engine, factory):
            yield factory
            assert checked_out(engine) == 0

    return session_factory


class Pauses:
    """The pauses the runners asked for, in seconds; nobody actually sleeps.

    Attributes:
        seen: Every pause asked for, in order.
        meanwhile: Called at each pause: what happens elsewhere while the runner waits.
    """

    def __init__(self) -> None:
        self.seen: list[float] = []
        self.meanwhile: Callable[[], object] = lambda: None

    def sleep(self, seconds: float) -> None:
        self.seen.append(seconds)
        self.meanwhile()

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> Pauses:
    """Record the runners' pauses between attempts instead of sleeping them."""
    recorded = Pauses()
    monkeypatch.setattr(runner_module, "_sleep", recorded.sleep)
    monkeypatch.setattr(async_runner_module, "_sleep", recorded.async_sleep)
    return recorded


@pytest.fixture
def database_errors() -> Iterator[Callable[[FlavouredEngine], list[object]]]:
    """Return a function that records the driver's code of every error an engine meets."""
    listening: list[tuple[Engine, Callable[..., None]]] = []

    def record_on(engine: FlavouredEngine) -> list[object]:
        codes: list[object] = []
        backend = backend_of(engine.sync_engine.dialect.name)

        def record(context: sqlalchemy.engine.ExceptionContext) -> None:
            codes.append(driver_error_code(context.original_exception, backend))

        event.listen(engine.sync_engine, "handle_error", record, insert=True)
        listening.append((engine.sync_engine, record))
        return codes

    yield record_on
    for engine, record in listening:
        event.remove(engine, "handle_error", record)


def _add_committed(url: URL, *users: tuple[str, int]) -> None:
    engine = userstore.create_engine(url)
    try:
        with userstore.create_session_factory(engine)() as session:
            repo = UserRepository(session)
            for name, number in users:
                repo.add(User(name=name, number=number))
            repo.commit()
    finally:
        engine.dispose()


@pytest.fixture
def fresh(tmp_path: Path, flavour: str) -> Iterator[Callable[..., tuple[URL, FlavouredEngine]]]:
    """Return a function that opens a migrated database of its own on a backend, and an
    engine of the flavour under test on it (with the given engine options)."""
    with ExitStack() as stack:

        def open_fresh(backend: str, **options: Any) -> tuple[URL, FlavouredEngine]:
            url = stack.enter_context(migrated_database(backend, tmp_path / backend))
            engine = FlavouredEngine(flavour, url, **options)
            stack.callback(engine.dispose)
            return url, engine

        yield open_fresh


# --- Real transient failures in the middle of the work, retried to success ---------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_serialization_failure_in_the_middle_of_the_work_is_retried_to_success(
    backend: str,
    fresh: Callable[..., tuple[URL, FlavouredEngine]],
    pauses: Pauses,
    database_errors: Callable[[FlavouredEngine], list[object]],
):
    url, engine = fresh(backend, isolation_level="SERIALIZABLE")
    errors = database_errors(engine)
    other_engine = userstore.create_engine(url, isolation_level="SERIALIZABLE")
    seen: list[int] = []

    def another_unit_of_work_reads_and_writes() -> None:
        with userstore.create_session_factory(other_engine)() as session:
            other = UserRepository(session)
            other.add(User(name="other", number=other.count()))
            other.commit()

    def work(repo: UserRepository) -> int:
        seen.append(repo.count())  # this unit of work reads the table...
        if len(seen) == 1:
            another_unit_of_work_reads_and_writes()  # ...another commits in between...
        repo.add(User(name="runner", number=seen[-1]))  # ...and this one writes: 40001
        repo.count()
        return seen[-1]

    try:
        result = Runner(engine)(work)
    finally:
        other_engine.dispose()

    assert errors == ["40001"]
    assert seen == [0, 1]
    assert len(pauses.seen) == 1
    assert result == 1
    assert stored_users(url) == {"other": 0, "runner": 1}


# PostgreSQL: the session that waited first finds the deadlock when its deadlock_timeout ends,
# and fails itself; the other side waits longer. MariaDB: InnoDB fails the transaction that has
# written less, and the other side has written more.
_DEADLOCK_FILLERS = 20
_PATIENT = {
    "postgresql": {"options": "-c deadlock_timeout=20s"},
    "mariadb": {},
}


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_a_deadlock_in_the_middle_of_the_work_is_retried_to_success(
    backend: str,
    fresh: Callable[..., tuple[URL, FlavouredEngine]],
    pauses: Pauses,
    database_errors: Callable[[FlavouredEngine], list[object]],
):
    url, engine = fresh(backend)
    fillers = [(f"filler{i:02d}", 0) for i in range(_DEADLOCK_FILLERS)]
    _add_committed(url, ("x", 0), ("y", 0), *fillers)
    errors = database_errors(engine)
    other_engine = userstore.create_engine(url, connect_args=_PATIENT[backend])
    both_hold_one = threading.Barrier(2, timeout=30)
    other_failures: list[BaseException] = []

    def another_unit_of_work_takes_y_then_x() -> None:
        try:
            with userstore.create_session_factory(other_engine)() as session:
                other = UserRepository(session)
                for name, _ in fillers:
                    other.get_one(name).number = 1
                other.get_one("y").number += 1
                other.count()  # the UPDATEs are sent: this one holds y's row lock
                both_hold_one.wait()
                other.get_one("x").number += 1
                other.commit()  # waits for x until the work's unit of work is rolled back
        except BaseException as error:
            other_failures.append(error)

    other = threading.Thread(target=another_unit_of_work_takes_y_then_x)
    runs: list[int] = []

    def work(repo: UserRepository) -> None:
        runs.append(len(runs) + 1)
        repo.get_one("x").number += 1
        repo.count()  # holds x's row lock
        if len(runs) == 1:
            other.start()
            both_hold_one.wait()
        repo.get_one("y").number += 1
        repo.count()  # waits for y, held by the other, which waits for x: a deadlock

    pauses.meanwhile = lambda: other.join(60)  # the other commits while the runner pauses
    try:
        Runner(engine)(work)
    finally:
        other.join(60)
        other_engine.dispose()

    assert other_failures == []
    assert errors == [{"postgresql": "40P01", "mariadb": 1213}[backend]]
    assert runs == [1, 2]
    assert stored_users(url) == {"x": 2, "y": 2, **{name: 1 for name, _ in fillers}}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_busy_sqlite_database_in_the_middle_of_the_work_is_retried_to_success(
    backend: str,
    fresh: Callable[..., tuple[URL, FlavouredEngine]],
    pauses: Pauses,
    database_errors: Callable[[FlavouredEngine], list[object]],
):
    url, engine = fresh(backend)
    errors = database_errors(engine)
    assert url.database is not None
    other_writer = sqlite3.connect(url.database, isolation_level=None, check_same_thread=False)
    seen: list[int] = []

    def work(repo: UserRepository) -> int:
        seen.append(repo.count())  # this unit of work reads...
        if len(seen) == 1:
            other_writer.execute("BEGIN IMMEDIATE")  # ...another writer takes the write lock...
        repo.add(User(name="runner", number=seen[-1]))
        repo.count()  # ...and this one's write is refused at once: SQLITE_BUSY
        return seen[-1]

    def other_writer_commits() -> None:
        other_writer.execute("INSERT INTO users (name, number) VALUES ('other', 7)")
        other_writer.execute("COMMIT")

    pauses.meanwhile = other_writer_commits
    try:
        result = Runner(engine)(work)
    finally:
        other_writer.close()

    assert errors == ["SQLITE_BUSY"]
    assert seen == [0, 1]
    assert result == 1
    assert stored_users(url) == {"other": 7, "runner": 1}


def _server_id(repo: UserRepository, backend: str) -> int:
    """The server's id for the connection under ``repo``'s open transaction (either flavour)."""
    connection = repo.session.connection()
    if isinstance(connection, Blocking):
        return connection.run_sync(connection_id, backend)
    return connection_id(connection, backend)


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_a_connection_killed_in_the_middle_of_the_work_is_retried_and_nothing_is_written_twice(
    backend: str, fresh: Callable[..., tuple[URL, FlavouredEngine]], pauses: Pauses
):
    url, engine = fresh(backend)
    _add_committed(url, ("counter", 1))
    runs: list[int] = []

    def work(repo: UserRepository) -> int:
        runs.append(len(runs) + 1)
        counter = repo.get_one("counter")
        counter.number += 1
        repo.add(User(name=f"after{counter.number}", number=len(runs)))
        repo.count()  # both writes are sent, in the open transaction
        if len(runs) == 1:
            kill_connections(url, backend, {_server_id(repo, backend)})
        return repo.get_one("counter").number

    assert Runner(engine)(work) == 2

    assert runs == [1, 2]
    assert len(pauses.seen) == 1
    assert stored_users(url) == {"counter": 2, "after2": 2}  # the counter moved once


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_a_database_that_cannot_be_reached_is_tried_exactly_attempts_times(
    backend: str, fresh: Callable[..., tuple[URL, FlavouredEngine]], flavour: str, pauses: Pauses
):
    url, _ = fresh(backend)
    nobody_listens = FlavouredEngine(flavour, url.set(host="127.0.0.1", port=1))
    runs: list[int] = []

    def work(repo: UserRepository) -> int:
        runs.append(len(runs) + 1)
        return repo.count()

    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            Runner(nobody_listens)(work, attempts=3)
    finally:
        nobody_listens.dispose()

    assert runs == [1, 2, 3]
    assert len(pauses.seen) == 2
    assert raised.value.__notes__[-1] == (
        f"{_runner_name(flavour)}: attempt 3 of 3 failed in the work; no attempts left"
    )


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_a_commit_that_fails_every_time_is_raised_with_a_note_that_it_may_have_been_written(
    backend: str, fresh: Callable[..., tuple[URL, FlavouredEngine]], flavour: str, pauses: Pauses
):
    url, engine = fresh(backend)
    runs: list[int] = []

    def work(repo: UserRepository) -> None:
        runs.append(len(runs) + 1)
        repo.add(User(name=f"run{len(runs)}", number=1))
        repo.count()  # sent; the connection is killed before the runner's COMMIT
        kill_connections(url, backend, {_server_id(repo, backend)})

    with pytest.raises(TransientDatabaseError) as raised:
        Runner(engine)(work, attempts=2)

    assert runs == [1, 2]
    name = _runner_name(flavour)
    assert raised.value.__notes__[0].startswith(f"{name}: attempt 1 of 2 failed at commit: ")
    assert raised.value.__notes__[1:] == [
        f"{name}: attempt 2 of 2 failed at commit; no attempts left",
        f"{name}: {runner_module.COMMIT_OUTCOME_NOTE}",
    ]
    assert stored_users(url) == {}  # (here the COMMIT never reached the server)


def _runner_name(flavour: str) -> str:
    return "run_unit_of_work" if flavour == "sync" else "run_unit_of_work_async"


# --- Everything else is raised at once, with nothing of the work committed ----------------


class OutOfStockError(Exception):
    """An app's own exception."""


def _duplicate(repo: UserRepository) -> None:
    repo.add(User(name="taken", number=2))
    repo.count()


def _invalid(repo: UserRepository) -> None:
    repo.upsert("x" * 300, 1)


def _missing(repo: UserRepository) -> None:
    repo.delete("nobody")


def _app_error(repo: UserRepository) -> None:
    raise OutOfStockError("no more numbers")


def _app_error_caused_by_a_transient_one(repo: UserRepository) -> None:
    try:
        raise TransientDatabaseError("a deadlock, say")
    except TransientDatabaseError as error:
        raise OutOfStockError("the app chose to give up") from error


def _database_error(repo: UserRepository) -> None:
    repo.session.execute(sqlalchemy.text("SELECT no_such_column FROM users"))


FAILURES = {
    _duplicate: DuplicateUserError,
    _invalid: InvalidUserError,
    _missing: UserNotFoundError,
    _app_error: OutOfStockError,
    _app_error_caused_by_a_transient_one: OutOfStockError,
    _database_error: DatabaseError,
}
_NEEDS_SQL = pytest.mark.not_on_fake(reason="the failure is a statement of SQL the fake cannot run")


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(failure, marks=[_NEEDS_SQL] if failure is _database_error else [])
        for failure in FAILURES
    ],
    ids=lambda failure: failure.__name__.strip("_"),
)
def test_a_failure_that_is_not_transient_is_raised_at_once_and_nothing_of_the_work_is_written(
    failure: Callable[[UserRepository], None],
    run: Runner,
    pauses: Pauses,
    empty_table: None,
    stored: Callable[[], list[tuple[str, int | None]]],
):
    run(lambda repo: repo.add(User(name="taken", number=1)))
    runs: list[int] = []

    def work(repo: UserRepository) -> None:
        runs.append(len(runs) + 1)
        repo.add(User(name="staged", number=1))
        repo.get_one("taken").number = 3
        repo.count()  # both changes are sent in the open transaction
        failure(repo)

    with pytest.raises(FAILURES[failure]) as raised:
        run(work)

    assert type(raised.value) is FAILURES[failure]
    assert runs == [1]
    assert pauses.seen == []
    assert stored() == [("taken", 1)]


def test_keyboard_interrupt_is_never_retried_and_leaves_nothing_written(
    sync_source: Callable[[], Any],
    pauses: Pauses,
    empty_table: None,
    stored: Callable[[], list[tuple[str, int | None]]],
):
    runs: list[int] = []

    def work(repo: UserRepository) -> None:
        runs.append(len(runs) + 1)
        repo.add(User(name="staged", number=1))
        repo.count()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_unit_of_work(sync_source, work)

    assert runs == [1]
    assert pauses.seen == []
    assert stored() == []


def test_a_cancelled_task_is_never_retried_and_leaves_nothing_written(
    async_source: Callable[[], AbstractAsyncContextManager[Callable[[], Any]]],
    pauses: Pauses,
    empty_table: None,
    stored: Callable[[], list[tuple[str, int | None]]],
):
    runs: list[int] = []

    async def scenario() -> None:
        async with async_source() as source:
            written = asyncio.Event()

            async def work(repo: AsyncUserRepository) -> None:
                runs.append(len(runs) + 1)
                await repo.add(User(name="staged", number=1))
                await repo.count()
                written.set()
                await asyncio.Event().wait()  # until cancelled

            task = asyncio.create_task(run_unit_of_work_async(source, work))
            await written.wait()
            task.cancel()
            await asyncio.wait({task})

            assert task.cancelled()

    asyncio.run(scenario())

    assert runs == [1]
    assert pauses.seen == []
    assert stored() == []


# --- Bounded attempts, jittered and capped pauses ----------------------------------------


def test_a_work_failing_transiently_every_time_runs_attempts_times_then_raises_the_last_error(
    run: Runner,
    flavour: str,
    pauses: Pauses,
    empty_table: None,
    stored: Callable[[], list[tuple[str, int | None]]],
):
    failures: list[TransientDatabaseError] = []

    def work(repo: UserRepository) -> None:
        repo.add(User(name=f"attempt{len(failures) + 1}", number=1))
        repo.count()
        failures.append(TransientDatabaseError(f"failure {len(failures) + 1}"))
        raise failures[-1]

    with pytest.raises(TransientDatabaseError) as raised:
        run(work, attempts=4, backoff=0.01, max_backoff=1.0)

    assert raised.value is failures[-1]
    assert len(failures) == 4
    assert len(pauses.seen) == 3
    assert stored() == []
    name = _runner_name(flavour)
    notes = raised.value.__notes__
    assert [note.split("; retried after")[0] for note in notes[:3]] == [
        f"{name}: attempt {n} of 4 failed in the work: TransientDatabaseError: failure {n}"
        for n in (1, 2, 3)
    ]
    assert notes[3] == f"{name}: attempt 4 of 4 failed in the work; no attempts left"


def test_only_the_last_run_of_a_retried_work_is_committed(
    run: Runner,
    pauses: Pauses,
    empty_table: None,
    stored: Callable[[], list[tuple[str, int | None]]],
):
    runs: list[int] = []

    def work(repo: UserRepository) -> int:
        runs.append(len(runs) + 1)
        repo.add(User(name=f"run{len(runs)}", number=len(runs)))
        repo.count()
        if len(runs) < 3:
            raise TransientDatabaseError(f"run {len(runs)} failed")
        return len(runs)

    assert run(work) == 3

    assert len(pauses.seen) == 2
    assert stored() == [("run3", 3)]


def _failing_transiently(repo: UserRepository) -> None:
    raise TransientDatabaseError("try again")


def test_pauses_double_from_backoff_up_to_max_backoff(
    run: Runner, pauses: Pauses, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(runner_module, "_random", lambda: 1.0)  # the top of each range

    with pytest.raises(TransientDatabaseError):
        run(_failing_transiently, attempts=7, backoff=0.1, max_backoff=0.5)

    assert pauses.seen == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_each_pause_is_drawn_from_zero_up_to_its_ceiling(
    run: Runner, pauses: Pauses, monkeypatch: pytest.MonkeyPatch
):
    draws = iter([0.5, 0.25, 0.0, 0.75])
    monkeypatch.setattr(runner_module, "_random", lambda: next(draws))

    with pytest.raises(TransientDatabaseError):
        run(_failing_transiently, attempts=5, backoff=0.1, max_backoff=0.8)

    assert pauses.seen == pytest.approx([0.05, 0.05, 0.0, 0.6])


def test_pauses_are_jittered_and_never_exceed_their_ceiling(run: Runner, pauses: Pauses):
    with pytest.raises(TransientDatabaseError):
        run(_failing_transiently, attempts=40, backoff=0.1, max_backoff=0.3)

    ceilings = [min(0.3, 0.1 * 2**n) for n in range(39)]
    assert all(0 <= pause <= ceiling for pause, ceiling in zip(pauses.seen, ceilings, strict=True))
    assert len(set(pauses.seen)) > 30  # drawn, not fixed


def test_one_attempt_means_no_retry(run: Runner, pauses: Pauses):
    with pytest.raises(TransientDatabaseError):
        run(_failing_transiently, attempts=1)

    assert pauses.seen == []


# --- Arguments are checked before anything runs -------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attempts": 0}, "attempts must be a positive int, got 0"),
        ({"attempts": -1}, "attempts must be a positive int, got -1"),
        ({"attempts": 2.0}, "attempts must be a positive int, got 2.0"),
        ({"attempts": True}, "attempts must be a positive int, got True"),
        ({"attempts": "5"}, "attempts must be a positive int, got '5'"),
        ({"backoff": -0.1}, "backoff must be a finite, non-negative number of seconds, got -0.1"),
        ({"backoff": float("nan")}, "backoff must be a finite, non-negative number of seconds"),
        ({"backoff": float("inf")}, "backoff must be a finite, non-negative number of seconds"),
        ({"backoff": "0.1"}, "backoff must be a finite, non-negative number of seconds, got '0.1'"),
        ({"max_backoff": -1}, "max_backoff must be a finite, non-negative number of seconds"),
        ({"max_backoff": None}, "max_backoff must be a finite, non-negative number of seconds"),
        ({"backoff": 10**400}, "backoff must be a finite, non-negative number of seconds"),
        ({"backoff": True}, "backoff must be a finite, non-negative number of seconds"),
    ],
)
def test_invalid_retry_arguments_are_refused_before_any_sql(
    options: dict[str, object], message: str, run: Runner, sent_sql: StatementLog
):
    runs: list[int] = []

    with pytest.raises(InvalidUserError, match=re.escape(message)):
        run(lambda repo: runs.append(repo.count()), **options)

    assert runs == []
    assert sent_sql.statements == []


def test_zero_backoff_retries_without_pausing(run: Runner, pauses: Pauses):
    with pytest.raises(TransientDatabaseError):
        run(_failing_transiently, attempts=3, backoff=0, max_backoff=0)

    assert pauses.seen == [0.0, 0.0]


def test_backoffs_given_as_decimal_or_fraction_are_taken_as_seconds(run: Runner, pauses: Pauses):
    with pytest.raises(TransientDatabaseError):
        run(_failing_transiently, attempts=2, backoff=Decimal("0"), max_backoff=Fraction(0))

    assert pauses.seen == [0.0]


def test_a_source_or_work_that_cannot_be_called_is_refused(engine: Engine):
    factory = userstore.create_session_factory(engine)

    with pytest.raises(InvalidUserError, match="source must be callable, got Engine"):
        run_unit_of_work(engine, lambda repo: None)
    with pytest.raises(InvalidUserError, match="work must be callable, got str"):
        run_unit_of_work(factory, "add jenny")


def test_each_runner_refuses_the_other_flavour_before_the_work_runs(
    database_url: URL, engine: Engine
):
    runs: list[str] = []

    async def async_work(repo: AsyncUserRepository) -> None:
        runs.append("async")

    def sync_work(repo: UserRepository) -> int:
        runs.append("sync")
        return 0

    async def scenario() -> None:
        async with async_engine_and_sessions(database_url) as (_, async_factory):
            with pytest.raises(InvalidUserError, match="source returned an AsyncSession"):
                run_unit_of_work(async_factory, sync_work)
            with pytest.raises(InvalidUserError, match="source returned a sync Session"):
                await run_unit_of_work_async(sync_factory, async_work)
            with pytest.raises(InvalidUserError, match="work must return an awaitable"):
                await run_unit_of_work_async(async_factory, lambda repo: 42)

    sync_factory = userstore.create_session_factory(engine)
    with pytest.raises(InvalidUserError, match="work is an async function"):
        run_unit_of_work(sync_factory, async_work)
    asyncio.run(scenario())

    assert runs == []


def test_a_source_must_return_a_session_or_a_repository_of_the_runners_flavour():
    store = InMemoryUserStore()
    runs: list[int] = []

    async def async_work(repo: AsyncInMemoryUserRepository) -> None:
        runs.append(1)

    with pytest.raises(InvalidUserError, match="source returned an async repository"):
        run_unit_of_work(store.async_repository, runs.append)
    with pytest.raises(InvalidUserError, match="source returned a sync repository"):
        asyncio.run(run_unit_of_work_async(store.repository, async_work))
    with pytest.raises(InvalidUserError, match="must return a session or a repository, got int"):
        run_unit_of_work(lambda: 42, runs.append)

    assert runs == []
    assert store.rows() == []


def test_a_session_that_expires_users_on_commit_is_refused(database_url: URL, engine: Engine):
    runs: list[int] = []

    async def scenario() -> None:
        async with async_engine_and_sessions(database_url) as (async_engine, _):
            with pytest.raises(ConfigurationError, match="expires users on commit"):
                await run_unit_of_work_async(
                    async_sessionmaker(async_engine),
                    lambda repo: runs.append(1),
                )

    with pytest.raises(ConfigurationError, match="expire_on_commit=False"):
        run_unit_of_work(sessionmaker(engine), lambda repo: runs.append(1))
    asyncio.run(scenario())

    assert runs == []


# --- What the work returns ------------------------------------------------------------------


def test_the_users_the_work_returns_stay_readable_after_the_session_closed(
    run: Runner, empty_table: None, sent_sql: StatementLog
):
    jenny = run(lambda repo: repo.add(User(name="Jenny", number=8675309)))
    sent_sql.clear()

    assert sqlalchemy.inspect(jenny).session is None  # closed (on the fake: never had one)
    assert (jenny.name, jenny.number) == ("Jenny", 8675309)
    assert jenny.created_at is not None
    assert sent_sql.statements == []


# --- README.md ---------------------------------------------------------------------------


def test_the_readme_retrying_examples_run_on_every_backend(
    backend: str, fresh_database_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    if backend == "sqlite":  # the default database, as the README's other examples run on
        monkeypatch.delenv("USERSTORE_DATABASE_URL", raising=False)
        url = make_url(f"sqlite:///{tmp_path / 'userstore.db'}")
    else:
        monkeypatch.setenv(
            "USERSTORE_DATABASE_URL", fresh_database_url.render_as_string(hide_password=False)
        )
        url = fresh_database_url
    blocks = readme_blocks("python", "Retrying a unit of work")
    assert len(blocks) == 2

    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})

    assert stored_users(url) == {"Jenny": 8675309, "Ann": 1}


_WITHOUT_GREENLET = """
import sys
sys.modules["greenlet"] = None  # a sync-only install: no asyncio extra
import userstore
from userstore import migrations
engine = userstore.create_engine("sqlite://")
migrations.upgrade(engine)
Session = userstore.create_session_factory(engine)
assert userstore.run_unit_of_work(Session, lambda repo: repo.upsert("Jenny", 1)).number == 1
try:
    userstore.run_unit_of_work_async
except userstore.ConfigurationError as error:  # SQLAlchemy 2.1 needs greenlet to import
    assert "userstore[asyncio]" in str(error), error
else:  # SQLAlchemy 2.0 imports its asyncio extension without it: the engine asks
    try:
        userstore.create_async_engine("sqlite://")
    except userstore.ConfigurationError as error:
        assert "userstore[asyncio]" in str(error), error
    else:
        raise AssertionError("no ConfigurationError")
print("ok")
"""


def test_a_sync_only_install_runs_the_sync_runner_and_names_the_extra_the_async_one_needs():
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_GREENLET],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
