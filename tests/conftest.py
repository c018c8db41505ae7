"""Fixtures that run one contract suite against every backend."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import URL, Engine, event, text
from sqlalchemy.orm import Session

import userstore
from tests.databases import (
    BACKENDS,
    CONTRACT_TARGETS,
    SELECTED,
    create_test_engine,
    engine_options,
    plain_test_engine,
    prepare_engine,
    throwaway_database,
)
from tests.flavours import FLAVOURS, FlavouredEngine, FlavouredStore
from tests.schema import create_schema
from userstore.testing import InMemoryUserStore

# pytester runs an app's own test files against userstore.testing in a subprocess. Its
# fixture removes, after each test, the modules that test imported first: a driver first
# imported there would come back as new classes that SQLAlchemy's dialects do not know, so
# the drivers are imported here, once, whatever tests a run selects.
pytest_plugins = ["pytester"]
for _driver in ("psycopg", "pymysql", "asyncpg", "asyncmy", "aiosqlite"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_driver)

# Hypothesis profiles: "ci" (the default) finishes the model-based test in about
# a minute per backend; "long" (--hypothesis-profile=long) hunts for much longer.
_SLOW_DATABASE = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile(
    "ci",
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=_SLOW_DATABASE,
)
settings.register_profile(
    "long",
    max_examples=3000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=_SLOW_DATABASE,
)
settings.load_profile("ci")


# The in-memory fake (userstore.testing) is one more target of every test that
# exercises the repository contract: a test whose fixtures include one of these.
# So are the clusters' targets (tests/databases.py): PostgreSQL through PgBouncer
# in transaction mode, and MariaDB on Galera with each session on another node.
MEMORY: Final = "memory"
CONTRACT_FIXTURES: Final = frozenset(
    {"repo", "open_repository", "stored", "empty_table", "clear_users"}
)
# Fixtures that only a real database can give: a test on the fake that asks for
# one must say why it cannot apply there (the not_on_fake marker), or the run stops.
REAL_DATABASE_FIXTURES: Final = frozenset(
    {"database_url", "fresh_database_url", "engine", "plain_engine", "session"}
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "not_on_fake(reason): the test cannot apply to the in-memory fake (it inspects SQL, "
        "query plans, SQLAlchemy internals or a real connection); skipped there with the reason",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests of the backend under test on each real backend, and contract tests on more.

    Contract tests also run on the cluster targets under test (PgBouncer,
    Galera) and on the fake.
    """
    if "backend" not in metafunc.fixturenames or _parametrizes_backend_itself(metafunc):
        return
    targets = list(BACKENDS)
    if CONTRACT_FIXTURES.intersection(metafunc.fixturenames):
        targets.extend(target for target in CONTRACT_TARGETS if target in SELECTED)
        targets.append(MEMORY)
    metafunc.parametrize("backend", targets, indirect=True, scope="session")


def _parametrizes_backend_itself(metafunc: pytest.Metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs["argnames"]
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "backend" in names:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the fake: skip the tests marked not applicable, and refuse those that need SQL."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("backend") != MEMORY:
            continue
        marker = item.get_closest_marker("not_on_fake")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            if not reason:
                raise pytest.UsageError(f"{item.nodeid}: not_on_fake needs a reason")
            item.add_marker(
                pytest.mark.skip(reason=f"not applicable to the in-memory fake: {reason}")
            )
            continue
        needs = sorted(REAL_DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        if needs:
            raise pytest.UsageError(
                f"{item.nodeid} runs on the in-memory fake but needs a real database "
                f"(fixtures {', '.join(needs)}): make it work on the fake, or mark it "
                "@pytest.mark.not_on_fake(reason=...) saying why it cannot apply"
            )


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The target under test: sqlite, postgresql, mariadb, or memory (the in-memory fake).

    On a cluster target, a :class:`tests.databases.Target`: ``"postgresql"``
    (``.target == "pgbouncer"``) or ``"mariadb"`` (``.target == "galera"``).
    (The parameter is the target's name, so pytest never takes one target's
    cached fixtures for another that compares equal.)
    """
    return CONTRACT_TARGETS.get(request.param, str(request.param))


@pytest.fixture(scope="session")
def memory_store() -> InMemoryUserStore:
    """The in-memory fake's store, shared by the tests of the memory target."""
    return InMemoryUserStore()


def _real_database_only(backend: str, what: str) -> None:
    if backend == MEMORY:
        pytest.fail(f"{what} needs a real database; the in-memory fake has none")


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A database shared by the tests of one backend, with the users schema."""
    _real_database_only(backend, "database_url")
    with throwaway_database(backend, tmp_path_factory.mktemp(backend)) as url:
        engine = create_test_engine(backend, url)
        try:
            create_schema(engine)
        finally:
            engine.dispose()
        yield url


@pytest.fixture
def fresh_database_url(backend: str, tmp_path: Path) -> Iterator[URL]:
    """An empty database of its own, for tests that create the schema themselves."""
    with throwaway_database(backend, tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def engine(backend: str, database_url: URL) -> Iterator[Engine]:
    """A userstore engine on the shared database of the backend under test."""
    engine = create_test_engine(backend, database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def plain_engine(backend: str, database_url: URL) -> Iterator[Engine]:
    """A plain SQLAlchemy engine, for checking stored rows without userstore's code.

    Through PgBouncer it reads the primary directly; on Galera it reads causally.
    """
    engine = plain_test_engine(backend, database_url, pool_pre_ping=True)  # servers may restart
    yield engine
    engine.dispose()


@pytest.fixture
def clear_users(backend: str, request: pytest.FixtureRequest) -> Callable[[], None]:
    """Return a function that deletes every stored user (plain SQL; on the fake, its store)."""
    if backend == MEMORY:
        return request.getfixturevalue("memory_store").clear  # type: ignore[no-any-return]
    plain_engine: Engine = request.getfixturevalue("plain_engine")

    def clear() -> None:
        with plain_engine.begin() as connection:
            connection.execute(text("DELETE FROM users"))

    return clear


@pytest.fixture
def empty_table(clear_users: Callable[[], None]) -> None:
    """Start the test with no users stored."""
    clear_users()


@pytest.fixture(scope="session", params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """The flavour of the API under test: sync or async (see tests/flavours.py)."""
    return str(request.param)


@pytest.fixture(scope="session")
def flavoured_engine(
    backend: str, flavour: str, request: pytest.FixtureRequest
) -> Iterator[FlavouredEngine | FlavouredStore]:
    """A userstore engine of the flavour under test, on the backend's shared database.

    On the memory target, the in-memory fake of that flavour, with the same
    ``session()`` and ``repository()``.
    """
    if backend == MEMORY:
        yield FlavouredStore(flavour, request.getfixturevalue("memory_store"))
        return
    engine = FlavouredEngine(
        flavour, request.getfixturevalue("database_url"), **engine_options(backend)
    )
    prepare_engine(backend, engine.sync_engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(flavoured_engine: FlavouredEngine, empty_table: None) -> Iterator[Session]:
    """A session from userstore's factory of the flavour under test, closed after the test."""
    with flavoured_engine.session() as session:
        yield session


@pytest.fixture
def repo(
    backend: str,
    flavoured_engine: FlavouredEngine | FlavouredStore,
    empty_table: None,
    request: pytest.FixtureRequest,
) -> Iterator[userstore.UserRepository]:
    """The repository under test (sync, or async behind a blocking view), on an empty table."""
    if backend != MEMORY:
        yield flavoured_engine.repository(request.getfixturevalue("session"))
        return
    with flavoured_engine.session() as unit_of_work:
        yield flavoured_engine.repository(unit_of_work)


@pytest.fixture
def open_repository(
    flavoured_engine: FlavouredEngine | FlavouredStore,
) -> Iterator[Callable[[], userstore.UserRepository]]:
    """Return a function that opens another repository of the flavour under test.

    Each has a session of its own (another unit of work, as another request or
    process would have), closed after the test.
    """
    sessions: list[Any] = []

    def open_one() -> userstore.UserRepository:
        sessions.append(flavoured_engine.session())
        return flavoured_engine.repository(sessions[-1])  # type: ignore[no-any-return]

    yield open_one
    for session in sessions:
        session.close()


@pytest.fixture
def stored(
    backend: str, request: pytest.FixtureRequest
) -> Callable[[], list[tuple[str, int | None]]]:
    """Return a function that reads (name, number) rows with plain SQL, in name order.

    On the fake: the committed rows of its store, read without a repository.
    """
    if backend == MEMORY:
        store: InMemoryUserStore = request.getfixturevalue("memory_store")
        return lambda: [(row.name, row.number) for row in store.rows()]
    plain_engine: Engine = request.getfixturevalue("plain_engine")

    def read() -> list[tuple[str, int | None]]:
        with plain_engine.connect() as connection:
            rows = connection.execute(text("SELECT name, number FROM users"))
            return sorted((row.name, row.number) for row in rows)

    return read


class StatementLog:
    """The SQL statements an engine sent, in order."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def clear(self) -> None:
        self.statements.clear()


@pytest.fixture
def sent_sql(flavoured_engine: FlavouredEngine | FlavouredStore) -> Iterator[StatementLog]:
    """Record every statement the engine under test sends to the driver during the test.

    On the fake: every read and write of its store (its counterpart of SQL), so
    "nothing was sent" still means nothing was read or written.
    """
    log = StatementLog()
    if isinstance(flavoured_engine, FlavouredStore):
        store, record_access = flavoured_engine.store, log.statements.append
        store.listen(record_access)
        yield log
        store.unlisten(record_access)
        return
    engine = flavoured_engine.sync_engine

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        log.statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield log
    event.remove(engine, "before_cursor_execute", record)
