"""How the pytest plugin proves that a test left the database as it found it.

Before each test that uses the database, :func:`take_snapshot` records its
tables (all but Alembic's version tables) with their row counts, and the
rows of every table that is not empty. After the test's transaction is
rolled back, :func:`changes` compares the database with that snapshot: a
table created or dropped, a row count that changed, or (for a table that had
rows) a row that changed can only be something the rollback could not undo,
committed outside the test's transaction. :func:`restore` then puts the
snapshot back, so the next test starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import pytest
from sqlalchemy import Connection, Engine, MetaData, Table, func, inspect, select
from sqlalchemy import exc as sa_exc

from userstore.errors import UserStoreError
from userstore.migration_env import VERSION_TABLE

IGNORED_TABLES: Final = frozenset({VERSION_TABLE, "alembic_version"})
"""Version tables: migrations move them on purpose, and tests do not."""

TEARDOWN_ERRORS: Final = (UserStoreError, sa_exc.SQLAlchemyError)
"""What ending a test's transaction raises when the test broke it (a savepoint gone, say)."""

# What a fixture's teardown could not do cleanly, for the isolation check to report.
_TEARDOWN_PROBLEMS: Final = pytest.StashKey[list[str]]()

# A table with more rows than this is compared by its row count only.
_MAX_ROWS_KEPT: Final = 10_000


@dataclass
class Snapshot:
    """What the database held: tables, row counts, and the rows of small non-empty tables."""

    metadata: MetaData
    counts: dict[str, int]
    rows: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)


def _reflect(connection: Connection) -> MetaData:
    metadata = MetaData()
    metadata.reflect(connection, only=lambda name, _: name not in IGNORED_TABLES)
    return metadata


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - IGNORED_TABLES


def _rows(connection: Connection, table: Table) -> list[tuple[object, ...]]:
    return [tuple(row) for row in connection.execute(select(table))]


def _same_rows(left: list[tuple[object, ...]], right: list[tuple[object, ...]]) -> bool:
    return sorted(map(repr, left)) == sorted(map(repr, right))


def take_snapshot(engine: Engine, previous: Snapshot | None = None) -> Snapshot:
    """Record what the database holds now (see the module docstring).

    Args:
        engine: An engine on the database.
        previous: The last snapshot; its reflected tables are reused when the
            database still has exactly those tables.
    """
    with engine.connect() as connection:
        if previous is not None and _table_names(connection) == set(previous.counts):
            metadata = previous.metadata
        else:
            metadata = _reflect(connection)
        counts = _counts(connection, metadata)
        snapshot = Snapshot(metadata, counts)
        for name, count in counts.items():
            if 0 < count <= _MAX_ROWS_KEPT:
                snapshot.rows[name] = _rows(connection, metadata.tables[name])
    return snapshot


def _counts(connection: Connection, metadata: MetaData) -> dict[str, int]:
    return {
        name: connection.execute(select(func.count()).select_from(table)).scalar_one()
        for name, table in metadata.tables.items()
    }


def changes(engine: Engine, before: Snapshot) -> list[str]:
    """What differs from ``before`` now, one line per table; empty when nothing does."""
    found: list[str] = []
    with engine.connect() as connection:
        names = _table_names(connection)
        found += [f"table {name} was created" for name in sorted(names - set(before.counts))]
        found += [f"table {name} was dropped" for name in sorted(set(before.counts) - names)]
        for name in sorted(names & set(before.counts)):
            table = before.metadata.tables[name]
            count = connection.execute(select(func.count()).select_from(table)).scalar_one()
            if count != before.counts[name]:
                found.append(f"table {name} held {before.counts[name]} rows, now {count}")
            elif name in before.rows and not _same_rows(
                before.rows[name], _rows(connection, table)
            ):
                found.append(f"rows of table {name} were changed")
    return found


def restore(engine: Engine, before: Snapshot) -> list[str]:
    """Put the database back as ``before`` recorded it: tables, then rows.

    Tables created since are dropped, dropped ones created again (as
    reflected), and the rows of every table ``before`` kept the rows of (or
    found empty) replaced by those, in foreign-key order.

    Returns:
        The tables whose rows changed but could not be put back (too many to keep).
    """
    with engine.begin() as connection:
        now = _reflect(connection)
        now.drop_all(
            connection, tables=[t for t in now.sorted_tables if t.name not in before.counts]
        )
        before.metadata.create_all(
            connection,
            tables=[t for t in before.metadata.sorted_tables if t.name not in now.tables],
        )
        tables = [
            table
            for table in before.metadata.sorted_tables
            if before.counts[table.name] == 0 or table.name in before.rows
        ]
        for table in reversed(tables):
            connection.execute(table.delete())
        for table in tables:
            rows = before.rows.get(table.name)
            if rows:
                keys = [column.key for column in table.columns]
                connection.execute(
                    table.insert(), [dict(zip(keys, row, strict=True)) for row in rows]
                )
        too_big = [t for t in before.metadata.sorted_tables if t not in tables]
        return sorted(
            table.name
            for table in too_big
            if connection.execute(select(func.count()).select_from(table)).scalar_one()
            != before.counts[table.name]
        )


def teardown_problems(request: pytest.FixtureRequest) -> list[str]:
    """What the fixtures of ``request``'s test could not end cleanly (a list to add to)."""
    problems: list[str] = request.node.stash.setdefault(_TEARDOWN_PROBLEMS, [])
    return problems


def note_teardown_problem(request: pytest.FixtureRequest, problem: str) -> None:
    """Record what a fixture's teardown could not do, for the isolation check to report."""
    teardown_problems(request).append(problem)
