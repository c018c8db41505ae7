"""Every cell of the seed notebook, replayed through userstore on every backend.

Twice: through the sync API, and through the async one (``create_async_engine``,
``AsyncUserRepository``), which must echo the very same statements cell by cell.
SQL is captured from the ``sqlalchemy.engine`` logger that ``echo=True`` feeds,
and each cell's statements are checked in order. Placeholders are normalised
to ``?`` (psycopg and PyMySQL write ``%(name)s``, asyncpg ``$1``; psycopg and asyncpg
add casts such as ``::VARCHAR``).
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import userstore
from tests.schema import create_schema
from userstore import migrations

# psycopg's and asyncpg's dialects also cast parameters (``%(pk_1)s::VARCHAR``, ``$1::VARCHAR``).
_PLACEHOLDER = re.compile(r"(%\(\w+\)s|%s|\$\d+)(::[A-Z]+)?")
# SQLAlchemy 2.0 labels selected columns (``users.name AS users_name``); 2.1 does not.
_LABEL = re.compile(r" AS users_\w+")
# The notebook selected name and number; the model has since gained timestamps.
SELECT_JENNY = (
    "SELECT users.name, users.number, users.created_at, users.updated_at "
    "FROM users WHERE users.name = ?"
)
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "mariadb": "mariadb+asyncmy",
}


class EchoedStatements:
    """The statements that echo logged since the last call to ``take``."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def take(self) -> list[str]:
        messages = [
            record.getMessage()
            for record in self._caplog.records
            if record.name.startswith("sqlalchemy.engine")
        ]
        self._caplog.clear()
        statements = [m for m in messages if not m.startswith("[")]  # parameter lines
        return [_LABEL.sub("", _PLACEHOLDER.sub("?", " ".join(s.split()))) for s in statements]


def _begin(backend: str) -> list[str]:
    # SQLite's engine sends its own deferred BEGIN (see userstore/sqlite.py).
    return ["BEGIN (implicit)", "BEGIN"] if backend == "sqlite" else ["BEGIN (implicit)"]


def _insert(backend: str) -> str:
    # The database's timestamps come back with the INSERT (RETURNING).
    if backend == "sqlite":
        return "INSERT INTO users (name, number) VALUES (?, ?) RETURNING created_at, updated_at"
    return (
        "INSERT INTO users (name, number) VALUES (?, ?) "
        "RETURNING users.created_at, users.updated_at"
    )


class Notebook:
    """What each cell of the notebook shows, checked the same way for both flavours."""

    def __init__(self, backend: str, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
        self._backend = backend
        self._echoed = EchoedStatements(caplog)

    def engine_made(self, engine: Engine) -> None:
        """In [2]: ``engine = create_engine(..., echo=True)``; ``engine``."""
        assert repr(engine) == f"Engine({engine.url!r})"
        assert engine.echo is True

    def schema_created(self) -> None:
        """In [6]: the schema is created (by the migrations, not ``create_all``)."""
        assert any(s.startswith("CREATE TABLE users") for s in self._echoed.take())

    def user_made(self) -> userstore.User:
        """In [9]-[12]: a User, its repr and fields; no SQL."""
        jenny = userstore.User(name="Jenny", number=8675309)
        assert repr(jenny) == "User(name=Jenny, number=8675309)"
        assert (jenny.name, jenny.number) == ("Jenny", 8675309)
        return jenny

    def added(self, session: Session | AsyncSession, jenny: userstore.User) -> None:
        """In [14]-[16]: a session factory, a session, add: staged, no SQL."""
        assert self._echoed.take() == []
        assert jenny in session.new

    def queried(self, jenny_from_db: userstore.User | None, jenny: userstore.User) -> None:
        """In [17]-[18]: the query autoflushes the INSERT, then SELECTs: the very same object."""
        assert self._echoed.take() == [*_begin(self._backend), _insert(self._backend), SELECT_JENNY]
        assert repr(jenny_from_db) == "User(name=Jenny, number=8675309)"
        assert jenny_from_db is jenny

    def committed(self, session: Session | AsyncSession) -> None:
        """In [19], [22]: commit; nothing pending."""
        assert self._echoed.take() == ["COMMIT"]
        assert len(session.new) == 0

    def queried_again(self, again: userstore.User | None, jenny: userstore.User) -> None:
        """In [24]: read again after commit: a new transaction and a SELECT, the same object."""
        assert self._echoed.take() == [*_begin(self._backend), SELECT_JENNY]
        assert repr(again) == "User(name=Jenny, number=8675309)"
        assert again is jenny


def test_the_seed_notebook_runs_cell_by_cell_through_the_repository(
    backend: str, fresh_database_url: URL, caplog: pytest.LogCaptureFixture
):
    notebook = Notebook(backend, caplog)
    engine = userstore.create_engine(fresh_database_url, echo=True)
    try:
        notebook.engine_made(engine)
        create_schema(engine)
        notebook.schema_created()
        jenny = notebook.user_made()
        session = userstore.create_session_factory(engine)()
        repo = userstore.UserRepository(session)
        repo.add(jenny)
        notebook.added(session, jenny)
        notebook.queried(repo.get("Jenny"), jenny)
        repo.commit()
        notebook.committed(session)
        notebook.queried_again(repo.get("Jenny"), jenny)
        session.close()
    finally:
        engine.dispose()


def test_the_seed_notebook_runs_cell_by_cell_through_the_async_repository(
    backend: str, fresh_database_url: URL, caplog: pytest.LogCaptureFixture
):
    notebook = Notebook(backend, caplog)
    # SQLite in memory, as the notebook had it; a fresh database of its own on a server.
    url = "sqlite:///:memory:" if backend == "sqlite" else fresh_database_url

    async def replay() -> None:
        engine = userstore.create_async_engine(url, echo=True)
        try:
            assert engine.url.drivername == ASYNC_DRIVERS[backend]
            notebook.engine_made(engine.sync_engine)
            await migrations.upgrade_async(engine)
            notebook.schema_created()
            jenny = notebook.user_made()
            session = userstore.create_async_session_factory(engine)()
            repo = userstore.AsyncUserRepository(session)
            await repo.add(jenny)
            notebook.added(session, jenny)
            notebook.queried(await repo.get("Jenny"), jenny)
            await repo.commit()
            notebook.committed(session)
            notebook.queried_again(await repo.get("Jenny"), jenny)
            await session.close()
        finally:
            await engine.dispose()

    asyncio.run(replay())
