"""pytest fixtures for an app's tests: a throwaway database and a rollback per test.

Enable it with ``pytest_plugins = ["userstore.testing"]`` in the app's root
``conftest.py`` (or ``-p userstore.testing``). Fixtures:

- ``userstore_url`` (session): the URL the tests' database is made on:
  ``--userstore-url``, else ``USERSTORE_TEST_DATABASE_URL``, else a SQLite
  file in pytest's temporary directory.
- ``userstore_engine`` / ``userstore_async_engine`` (session): engines from
  :func:`userstore.create_engine` / :func:`userstore.create_async_engine` on
  a throwaway database: on a PostgreSQL or MariaDB server a new database
  (UTF8 / utf8mb4, a unique name per run and per xdist worker), on SQLite a
  new file; migrated to head once, dropped at the end of the run. The async
  engine has no pool, so no connection outlives the event loop it was made on.
- ``user_session_factory`` / ``async_user_session_factory`` (function): a
  ``sessionmaker`` / ``async_sessionmaker`` whose sessions all join the test's
  one transaction on one connection: their ``commit()`` and ``rollback()`` end
  savepoints only, and the test's transaction is rolled back after it.
- ``user_repository`` / ``async_user_repository`` (function): a repository on
  a session of that factory, closed after the test.

After every test that requests any of these fixtures, the plugin checks that
the database is as it was before the test (its shape: schemas, tables,
columns, indexes, constraints; and its rows, version tables included; see
:mod:`userstore.testing._isolation`). If not, something committed outside the
test's transaction: the test gets an error naming what changed, and the
database is put back for the tests after it, or, when that fails, every later
test that uses it fails at setup. A transaction the test left open on a
connection of its own is reported, and ended on PostgreSQL and MariaDB.
SIGTERM interrupts the run like Ctrl-C, so the throwaway database is dropped.

The async fixtures need pytest-asyncio (auto or strict mode) and serve only
the ``async def`` tests it runs.

(PYTEST_DONT_REWRITE: nothing here asserts, and an app may import this module
before pytest registers it as a plugin.)
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import pytest
from sqlalchemy import URL, Engine, NullPool
from sqlalchemy.orm import Session, sessionmaker

from userstore.engine import create_engine
from userstore.errors import ConfigurationError, UserStoreError
from userstore.repository import UserRepository
from userstore.testing._isolation import (
    TEARDOWN_ERRORS,
    Snapshot,
    changes,
    end_transactions,
    note_teardown_problem,
    open_transactions,
    restore,
    take_snapshot,
    teardown_problems,
)
from userstore.testing._throwaway import backend_of, throwaway_database

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "URL_VARIABLE",
    "async_user_repository",
    "async_user_session_factory",
    "pytest_addoption",
    "user_repository",
    "user_session_factory",
    "userstore_async_engine",
    "userstore_engine",
    "userstore_url",
]

URL_VARIABLE: Final = "USERSTORE_TEST_DATABASE_URL"
"""The environment variable that names the tests' database server, after ``--userstore-url``."""

_DATABASE_FIXTURE: Final = "_userstore_database"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--userstore-url``."""
    parser.getgroup("userstore").addoption(
        "--userstore-url",
        dest="userstore_url",
        metavar="URL",
        default=None,
        help=(
            "database server for userstore.testing's throwaway test database, e.g. "
            f"postgresql://user@host/postgres (default: ${URL_VARIABLE}, else a SQLite file)"
        ),
    )


def _sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "userstore"
    folder.mkdir(exist_ok=True)
    return folder / "userstore.db"


@pytest.fixture(scope="session")
def userstore_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL the tests' throwaway database is created on.

    ``--userstore-url``, else ``USERSTORE_TEST_DATABASE_URL``, else a SQLite
    file in pytest's temporary directory. For a server, the database the URL
    names is used only to create and drop the throwaway one; for SQLite the
    throwaway database is always a new file of the plugin's own.
    """
    option = request.config.getoption("userstore_url")
    given, source = (
        (option, "--userstore-url") if option else (os.environ.get(URL_VARIABLE), URL_VARIABLE)
    )
    if not given:
        return f"sqlite:///{_sqlite_file(tmp_path_factory)}"
    failure = None
    try:
        backend_of(given)
    except ConfigurationError as exc:
        failure = f"userstore.testing: {source} is not a usable database URL: {exc}"
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    return str(given)


@dataclass
class ThrowawayDatabase:
    """The throwaway database of the run, and what it held before the current test."""

    url: URL
    checker: Engine  # (an engine of the plugin's own, without a pool)
    snapshot: Snapshot | None = None
    broken: str | None = None  # why later tests cannot run on it
    locked_by: str | None = None  # SQLite: the test that left its write lock held


@pytest.fixture(scope="session")
def _userstore_database(
    userstore_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThrowawayDatabase]:
    with ExitStack() as stack:
        failure = None
        try:
            url = stack.enter_context(
                throwaway_database(userstore_url, _sqlite_file(tmp_path_factory))
            )
        except UserStoreError as exc:
            failure = (
                f"userstore.testing could not create and migrate the test database "
                f"({type(exc).__name__}): {exc}"
            )
        if failure is not None:  # (outside the except: the driver's traceback says nothing more)
            pytest.fail(failure, pytrace=False)
        checker = create_engine(url, pool_size=1, max_overflow=2)
        stack.callback(checker.dispose)
        _interrupt_on_sigterm(stack)
        yield ThrowawayDatabase(url, checker)


def _interrupt_on_sigterm(stack: ExitStack) -> None:
    """Make SIGTERM (``timeout``, a CI runner cancelling) interrupt the run like Ctrl-C.

    pytest then tears the fixtures down, so the throwaway database is dropped
    instead of left on the server. Only when nothing else handles SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def interrupt(_signal: int, _frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    stack.callback(signal.signal, signal.SIGTERM, signal.SIG_DFL)


# Every fixture of the plugin: a test that requests any of them is checked.
_PLUGIN_FIXTURES: Final = frozenset(
    {
        _DATABASE_FIXTURE,
        "userstore_url",
        "userstore_engine",
        "userstore_async_engine",
        "user_session_factory",
        "async_user_session_factory",
        "user_repository",
        "async_user_repository",
    }
)


def _unusable(database: ThrowawayDatabase) -> str | None:
    """Why the database cannot serve the next test, if it cannot."""
    if database.broken is not None:
        return database.broken
    if database.locked_by is not None:
        if open_transactions(database.checker):
            return (
                f"userstore.testing: the test database is still locked by the transaction "
                f"{database.locked_by} left open on a connection of its own; this test "
                f"would wait for it."
            )
        database.locked_by = None
    return None


@pytest.fixture(autouse=True)
def _userstore_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that changed the database outside its transaction, and undo the change."""
    if _PLUGIN_FIXTURES.isdisjoint(getattr(request.node, "fixturenames", ())):
        yield
        return
    database: ThrowawayDatabase = request.getfixturevalue(_DATABASE_FIXTURE)
    unusable = _unusable(database)
    if unusable is not None:
        pytest.fail(unusable, pytrace=False)
    before = database.snapshot = take_snapshot(database.checker, database.snapshot)
    already_open = open_transactions(database.checker)  # (the app's own, say: not this test's)
    problems = teardown_problems(request)
    yield
    lines = _check(database, before, already_open.keys(), request.node.nodeid, problems)
    if lines:
        pytest.fail("\n".join(lines), pytrace=False)


def _check(
    database: ThrowawayDatabase,
    before: Snapshot,
    already_open: Collection[object],
    test: str,
    problems: list[str],
) -> list[str]:
    """What the test broke, after undoing what can be; empty when it broke nothing."""
    left_open = {
        id_: about
        for id_, about in open_transactions(database.checker).items()
        if id_ not in already_open
    }
    if database.url.get_backend_name() != "sqlite":
        end_transactions(database.checker, left_open)
    elif left_open:
        database.locked_by = test
    changed = changes(database.checker, before)
    if not changed and not problems and not left_open:
        return []
    lines = ["userstore.testing: this test broke test isolation."]
    if left_open:
        lines.append(
            "It left a transaction open on a connection of its own (never committed or "
            "closed); the tests after it would wait on its locks:"
        )
        lines += [f"  - {line}" for line in left_open.values()]
        lines.append(
            "The plugin ended that connection."
            if database.locked_by is None
            else "SQLite: the plugin cannot end it; the tests that use the database fail "
            "while it holds the write lock."
        )
    if changed:
        lines.append(
            "It changed the database outside its transaction, so the rollback after it "
            "could not undo this:"
        )
        lines += [f"  - {line}" for line in changed]
        lines.append(
            "Something committed for real: an explicit COMMIT, DDL on MariaDB (which commits "
            "implicitly), migrations, or a connection other than the sessions of "
            "user_session_factory / async_user_session_factory."
        )
    if problems:
        lines.append("Its transaction could not be ended cleanly:")
        lines += [f"  - {line}" for line in problems]
    if changed and database.locked_by is None:
        lines.append(_put_back(database, before, test))
    elif changed:
        lines.append(
            "The database cannot be put back while that connection holds the write lock: "
            "every later test that uses the database fails."
        )
        database.broken = (
            f"userstore.testing: the test database could not be put back after {test}, "
            "which left it changed and locked; this test would run on a changed database."
        )
    return lines


def _put_back(database: ThrowawayDatabase, before: Snapshot, test: str) -> str:
    try:
        restore(database.checker, before)
    except TEARDOWN_ERRORS as exc:
        database.broken = (
            f"userstore.testing: the test database could not be put back after {test} "
            f"changed it outside its transaction ({exc}); this test would run on a changed "
            "database."
        )
        return (
            f"Putting the database back failed ({exc}): every later test that uses the "
            "database fails."
        )
    return "The database was put back as it was before the test, for the tests after it."


@pytest.fixture(scope="session")
def userstore_engine(_userstore_database: ThrowawayDatabase) -> Iterator[Engine]:
    """A userstore engine on the run's throwaway database, migrated to head."""
    engine = create_engine(_userstore_database.url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def userstore_async_engine(_userstore_database: ThrowawayDatabase) -> Iterator[AsyncEngine]:
    """A userstore async engine on the run's throwaway database, without a connection pool.

    Each test runs on an event loop of its own; a pooled connection (asyncpg,
    asyncmy) would belong to the loop of the test that opened it.
    """
    from userstore.asyncio import create_async_engine

    engine = create_async_engine(_userstore_database.url, poolclass=NullPool)
    yield engine
    engine.sync_engine.dispose()  # (no pool: nothing to close on a loop)


@pytest.fixture
def user_session_factory(
    userstore_engine: Engine, request: pytest.FixtureRequest
) -> Iterator[sessionmaker[Session]]:
    """Sessions that all join this test's one transaction, rolled back after the test.

    Settings as :func:`userstore.create_session_factory`'s; ``commit()`` and
    ``rollback()`` of a session release or roll back a savepoint.
    """
    connection = userstore_engine.connect()
    transaction = connection.begin()
    yield sessionmaker(
        bind=connection,
        join_transaction_mode="create_savepoint",
        autoflush=True,
        expire_on_commit=False,
    )
    try:
        transaction.rollback()
    except TEARDOWN_ERRORS as exc:
        note_teardown_problem(request, f"rolling back the test's transaction failed: {exc}")
        connection.invalidate()
    finally:
        connection.close()


@pytest.fixture
def user_repository(
    user_session_factory: sessionmaker[Session], request: pytest.FixtureRequest
) -> Iterator[UserRepository]:
    """A :class:`~userstore.UserRepository` on a session of ``user_session_factory``."""
    session = user_session_factory()
    yield UserRepository(session)
    try:
        session.close()
    except TEARDOWN_ERRORS as exc:
        note_teardown_problem(request, f"closing the repository's session failed: {exc}")


try:
    from userstore.testing._async_fixtures import (
        async_user_repository,
        async_user_session_factory,
    )
except ImportError as exc:
    if exc.name != "pytest_asyncio":
        raise
    _NO_PYTEST_ASYNCIO: Final = (
        "userstore.testing's async fixtures run on pytest-asyncio, which is not installed: "
        "pip install pytest-asyncio"
    )

    @pytest.fixture(name="async_user_session_factory")
    def _async_user_session_factory_needs_pytest_asyncio() -> NoReturn:
        pytest.fail(_NO_PYTEST_ASYNCIO, pytrace=False)

    @pytest.fixture(name="async_user_repository")
    def _async_user_repository_needs_pytest_asyncio() -> NoReturn:
        pytest.fail(_NO_PYTEST_ASYNCIO, pytrace=False)
