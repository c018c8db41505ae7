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

After every test that uses the database, the plugin checks that the database
is as it was before the test (tables and rows, see
:mod:`userstore.testing._isolation`). If not, something committed outside the
test's transaction: the test gets an error naming what changed, and the
database is put back for the tests after it.

The async fixtures need pytest-asyncio (auto or strict mode).

(PYTEST_DONT_REWRITE: nothing here asserts, and an app may import this module
before pytest registers it as a plugin.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    note_teardown_problem,
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
        checker = create_engine(url, poolclass=NullPool)
        stack.callback(checker.dispose)
        yield ThrowawayDatabase(url, checker)


@pytest.fixture(autouse=True)
def _userstore_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that changed the database outside its transaction, and undo the change."""
    if _DATABASE_FIXTURE not in getattr(request.node, "fixturenames", ()):
        yield
        return
    database: ThrowawayDatabase = request.getfixturevalue(_DATABASE_FIXTURE)
    before = database.snapshot = take_snapshot(database.checker, database.snapshot)
    problems = teardown_problems(request)
    yield
    changed = changes(database.checker, before)
    if not changed and not problems:
        return
    lines = ["userstore.testing: this test broke test isolation."]
    if changed:
        lines.append(
            "It changed the database outside its transaction, so the rollback after it "
            "could not undo this:"
        )
        lines += [f"  - {line}" for line in changed]
        lines.append(
            "Something committed for real: an explicit COMMIT, DDL on MariaDB (which commits "
            "implicitly), or a connection other than the sessions of user_session_factory / "
            "async_user_session_factory."
        )
    if problems:
        lines.append("Its transaction could not be ended cleanly:")
        lines += [f"  - {line}" for line in problems]
    if changed:
        try:
            kept = restore(database.checker, before)
        except TEARDOWN_ERRORS as exc:
            lines.append(f"Putting the database back failed, later tests may fail too: {exc}")
        else:
            lines.append(
                f"The rows of {', '.join(kept)} could not be put back (too many to keep)."
                if kept
                else "The database was put back as it was before the test, for the tests after it."
            )
    pytest.fail("\n".join(lines), pytrace=False)


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
