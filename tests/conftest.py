"""Fixtures that run one contract suite against every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from hypothesis import HealthCheck, settings
from sqlalchemy import URL, Engine, event, text
from sqlalchemy.orm import Session

import userstore
from tests.databases import BACKENDS, throwaway_database
from tests.flavours import FLAVOURS, FlavouredEngine
from tests.schema import create_schema

# pytester runs an app's own test files against userstore.testing in a subprocess.
pytest_plugins = ["pytester"]

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


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test: sqlite, postgresql or mariadb."""
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A database shared by the tests of one backend, with the users schema."""
    with throwaway_database(backend, tmp_path_factory.mktemp(backend)) as url:
        engine = userstore.create_engine(url)
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
def engine(database_url: URL) -> Iterator[Engine]:
    """A userstore engine on the shared database of the backend under test."""
    engine = userstore.create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def plain_engine(database_url: URL) -> Iterator[Engine]:
    """A plain SQLAlchemy engine, for checking stored rows without userstore's code."""
    engine = sqlalchemy.create_engine(database_url, pool_pre_ping=True)  # servers may restart
    yield engine
    engine.dispose()


@pytest.fixture
def empty_table(plain_engine: Engine) -> None:
    """Start the test with no users stored."""
    with plain_engine.begin() as connection:
        connection.execute(text("DELETE FROM users"))


@pytest.fixture(scope="session", params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """The flavour of the API under test: sync or async (see tests/flavours.py)."""
    return str(request.param)


@pytest.fixture(scope="session")
def flavoured_engine(database_url: URL, flavour: str) -> Iterator[FlavouredEngine]:
    """A userstore engine of the flavour under test, on the backend's shared database."""
    engine = FlavouredEngine(flavour, database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(flavoured_engine: FlavouredEngine, empty_table: None) -> Iterator[Session]:
    """A session from userstore's factory of the flavour under test, closed after the test."""
    with flavoured_engine.session() as session:
        yield session


@pytest.fixture
def repo(flavoured_engine: FlavouredEngine, session: Session) -> userstore.UserRepository:
    """The repository under test (sync, or async behind a blocking view), on an empty table."""
    return flavoured_engine.repository(session)  # type: ignore[no-any-return]


@pytest.fixture
def open_repository(
    flavoured_engine: FlavouredEngine,
) -> Iterator[Callable[[], userstore.UserRepository]]:
    """Return a function that opens another repository of the flavour under test.

    Each has a session of its own (another unit of work, as another request or
    process would have), closed after the test.
    """
    sessions: list[Session] = []

    def open_one() -> userstore.UserRepository:
        sessions.append(flavoured_engine.session())
        return flavoured_engine.repository(sessions[-1])  # type: ignore[no-any-return]

    yield open_one
    for session in sessions:
        session.close()


@pytest.fixture
def stored(plain_engine: Engine) -> Callable[[], list[tuple[str, int | None]]]:
    """Return a function that reads (name, number) rows with plain SQL, in name order."""

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
def sent_sql(flavoured_engine: FlavouredEngine) -> Iterator[StatementLog]:
    """Record every statement the engine under test sends to the driver during the test."""
    engine = flavoured_engine.sync_engine
    log = StatementLog()

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        log.statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield log
    event.remove(engine, "before_cursor_execute", record)
