"""Every cell of the seed notebook, replayed through userstore on every backend.

SQL is captured from the ``sqlalchemy.engine`` logger that ``echo=True`` feeds,
and each cell's statements are checked in order. Placeholders are normalised
to ``?`` (psycopg and PyMySQL write ``%(name)s``, psycopg adds casts such as ``::VARCHAR``).
"""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import URL

import userstore
from tests.schema import create_schema

# psycopg's dialect also casts parameters (``%(pk_1)s::VARCHAR``).
_PLACEHOLDER = re.compile(r"(%\(\w+\)s|%s)(::[A-Z]+)?")
# SQLAlchemy 2.0 labels selected columns (``users.name AS users_name``); 2.1 does not.
_LABEL = re.compile(r" AS users_\w+")
# The notebook selected name and number; the model has since gained timestamps.
SELECT_JENNY = (
    "SELECT users.name, users.number, users.created_at, users.updated_at "
    "FROM users WHERE users.name = ?"
)


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


def test_the_seed_notebook_runs_cell_by_cell_through_the_repository(
    backend: str, fresh_database_url: URL, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    echoed = EchoedStatements(caplog)

    # In [2]: engine = create_engine(..., echo=True)
    engine = userstore.create_engine(fresh_database_url, echo=True)
    try:
        assert repr(engine) == f"Engine({engine.url!r})"
        assert engine.echo is True
        # In [6]: the schema is created (by the migrations, not create_all)
        create_schema(engine)
        assert any(s.startswith("CREATE TABLE users") for s in echoed.take())

        # In [9]-[12]: a User, its repr and fields; no SQL
        jenny = userstore.User(name="Jenny", number=8675309)
        assert repr(jenny) == "User(name=Jenny, number=8675309)"
        assert (jenny.name, jenny.number) == ("Jenny", 8675309)

        # In [14]-[16]: a session factory, a session, add: staged, no SQL
        session = userstore.create_session_factory(engine)()
        repo = userstore.UserRepository(session)
        repo.add(jenny)
        assert echoed.take() == []
        assert jenny in session.new

        # In [17]: the query by name autoflushes the INSERT, then SELECTs
        jenny_from_db = repo.get("Jenny")
        assert echoed.take() == [
            *_begin(backend),
            # The database's timestamps come back with the INSERT (RETURNING).
            "INSERT INTO users (name, number) VALUES (?, ?) RETURNING users.created_at, "
            "users.updated_at"
            if backend != "sqlite"
            else "INSERT INTO users (name, number) VALUES (?, ?) RETURNING created_at, updated_at",
            SELECT_JENNY,
        ]
        assert repr(jenny_from_db) == "User(name=Jenny, number=8675309)"

        # In [18]: the very same object
        assert jenny_from_db is jenny

        # In [19]: commit
        repo.commit()
        assert echoed.take() == ["COMMIT"]

        # In [22]: nothing pending
        assert len(session.new) == 0

        # In [24]: read again after commit: a new transaction and a SELECT
        again = repo.get("Jenny")
        assert echoed.take() == [*_begin(backend), SELECT_JENNY]
        assert repr(again) == "User(name=Jenny, number=8675309)"
        session.close()
    finally:
        engine.dispose()
