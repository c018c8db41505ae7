"""How the pytest plugin proves that a test left the database as it found it.

Before each test that uses the database, :func:`take_snapshot` records its
shape and its rows. The shape is a cheap fingerprint read from the catalog in
a few queries: the schemas (PostgreSQL), the tables of every schema that is
not the system's, each table's columns (type, nullability, default), indexes
and constraints (primary key, unique, foreign key, check). The rows are each
table's row count and the rows of every non-empty table, Alembic's version
tables included. After the test's transaction is rolled back,
:func:`changes` compares the database with that snapshot: whatever differs
was committed outside the test's transaction. :func:`restore` puts the
snapshot back (new schemas and tables dropped, changed or dropped tables
created again from their reflection, rows replaced) and checks the result
against the snapshot: :class:`NotRestoredError` when it does not match.

:func:`end_open_transactions` finds the transactions a test left open on
connections of its own, which would make the next test wait on their locks.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import pytest
from sqlalchemy import (
    Connection,
    DefaultClause,
    Engine,
    MetaData,
    Table,
    TextClause,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.schema import CreateSchema, DropSchema

from userstore.errors import UserStoreError

TEARDOWN_ERRORS: Final = (UserStoreError, sa_exc.SQLAlchemyError)
"""What ending a test's transaction raises when the test broke it (a savepoint gone, say)."""

# What a fixture's teardown could not do cleanly, for the isolation check to report.
_TEARDOWN_PROBLEMS: Final = pytest.StashKey[list[str]]()

# A table with more rows than this is compared by its row count only.
_MAX_ROWS_KEPT: Final = 10_000


class Part(NamedTuple):
    """One item of a database's shape: ``("column", "users", "number")``, say."""

    kind: str  # schema, table, view, column, index, constraint, foreign key, trigger
    table: str  # the table ("schema.table" outside the default schema), or the schema
    name: str = ""  # the column, index or constraint; empty for a schema or table

    def __str__(self) -> str:
        return f"{self.kind} {self.table}.{self.name}" if self.name else f"{self.kind} {self.table}"


Shape = dict[Part, str]
"""A database's shape: each part and its definition (a column's type, an index's columns...)."""

_PG_USER_SCHEMA = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"
_PG_TABLE = (
    "CASE WHEN n.nspname = current_schema() THEN c.relname ELSE n.nspname || '.' || c.relname END"
)
_SHAPE_QUERIES: Final = {
    "postgresql": [
        f"SELECT 'schema', n.nspname, '', '' FROM pg_namespace n WHERE {_PG_USER_SCHEMA}",
        f"SELECT CASE WHEN c.relkind = 'v' THEN 'view' ELSE 'table' END, {_PG_TABLE}, '', '' "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE {_PG_USER_SCHEMA} AND c.relkind IN ('r', 'p', 'f', 'v')",
        f"SELECT 'column', {_PG_TABLE}, a.attname, format_type(a.atttypid, a.atttypmod) "
        "|| CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE ' NULL' END "
        "|| coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        f"WHERE {_PG_USER_SCHEMA} AND c.relkind IN ('r', 'p', 'f') "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        f"SELECT 'index', {_PG_TABLE}, i.relname, pg_get_indexdef(i.oid) "
        "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE {_PG_USER_SCHEMA}",
        f"SELECT 'constraint', {_PG_TABLE}, k.conname, pg_get_constraintdef(k.oid) "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_PG_USER_SCHEMA}",
        f"SELECT 'trigger', {_PG_TABLE}, t.tgname, pg_get_triggerdef(t.oid) "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_PG_USER_SCHEMA} "
        "AND NOT t.tgisinternal",
    ],
    "mariadb": [
        "SELECT IF(table_type = 'VIEW', 'view', 'table'), table_name, '', '' "
        "FROM information_schema.tables WHERE table_schema = DATABASE()",
        "SELECT 'column', table_name, column_name, CONCAT(column_type, "
        "IF(is_nullable = 'YES', ' NULL', ' NOT NULL'), "
        "IFNULL(CONCAT(' DEFAULT ', column_default), ''), "
        "IFNULL(CONCAT(' COLLATE ', collation_name), '')) "
        "FROM information_schema.columns WHERE table_schema = DATABASE()",
        "SELECT 'index', table_name, index_name, CONCAT(IF(non_unique, '', 'UNIQUE '), '(', "
        "GROUP_CONCAT(column_name ORDER BY seq_in_index SEPARATOR ', '), ')') "
        "FROM information_schema.statistics WHERE table_schema = DATABASE() "
        "GROUP BY table_name, index_name, non_unique",
        "SELECT 'foreign key', k.table_name, k.constraint_name, CONCAT(k.columns, "
        "' REFERENCES ', r.referenced_table_name, ' ', k.referenced, "
        "' ON DELETE ', r.delete_rule, ' ON UPDATE ', r.update_rule) "
        "FROM (SELECT table_name, constraint_name, "
        "CONCAT('(', GROUP_CONCAT(column_name ORDER BY ordinal_position SEPARATOR ', '), ')') "
        "AS columns, CONCAT('(', GROUP_CONCAT(referenced_column_name "
        "ORDER BY ordinal_position SEPARATOR ', '), ')') AS referenced "
        "FROM information_schema.key_column_usage WHERE table_schema = DATABASE() "
        "AND referenced_table_name IS NOT NULL GROUP BY table_name, constraint_name) k "
        "JOIN (SELECT table_name, constraint_name, referenced_table_name, delete_rule, "
        "update_rule FROM information_schema.referential_constraints "
        "WHERE constraint_schema = DATABASE()) r "
        "ON r.table_name = k.table_name AND r.constraint_name = k.constraint_name",
        "SELECT 'constraint', table_name, constraint_name, check_clause "
        "FROM information_schema.check_constraints WHERE constraint_schema = DATABASE()",
    ],
    "sqlite": [
        "SELECT type, CASE WHEN type IN ('table', 'view') THEN name ELSE tbl_name END, "
        "CASE WHEN type IN ('table', 'view') THEN '' ELSE name END, "
        "CASE WHEN type IN ('trigger', 'view') THEN sql ELSE '' END "
        "FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND type IN ('table', 'view', 'trigger')",
        "SELECT 'column', m.name, p.name, p.type "
        "|| CASE WHEN p.\"notnull\" THEN ' NOT NULL' ELSE ' NULL' END "
        "|| coalesce(' DEFAULT ' || p.dflt_value, '') "
        "|| CASE WHEN p.pk THEN ' PRIMARY KEY ' || p.pk ELSE '' END "
        "FROM sqlite_schema m JOIN pragma_table_xinfo(m.name) p "
        "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        "SELECT 'index', m.name, l.name, CASE WHEN l.\"unique\" THEN 'UNIQUE ' ELSE '' END "
        "|| '(' || (SELECT group_concat(i.name, ', ') FROM "
        "(SELECT name FROM pragma_index_info(l.name) ORDER BY seqno) i) || ')' "
        "FROM sqlite_schema m JOIN pragma_index_list(m.name) l "
        "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        "SELECT 'foreign key', m.name, f.id, '(' || group_concat(f.\"from\", ', ') "
        "|| ') REFERENCES ' || f.\"table\" || ' (' || group_concat(f.\"to\", ', ') "
        "|| ') ON DELETE ' || f.on_delete || ' ON UPDATE ' || f.on_update "
        "FROM sqlite_schema m JOIN pragma_foreign_key_list(m.name) f "
        "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "GROUP BY m.name, f.id",
    ],
}


def backend(connection: Connection) -> str:
    """``sqlite``, ``postgresql`` or ``mariadb``."""
    name = connection.dialect.name
    return "mariadb" if name == "mysql" else name


def read_shape(connection: Connection) -> Shape:
    """The database's shape (see the module docstring), in a few catalog queries."""
    query = " UNION ALL ".join(_SHAPE_QUERIES[backend(connection)])
    return {
        Part(str(kind), str(table), str(name)): str(definition or "")
        for kind, table, name, definition in connection.execute(text(query))
    }


def _tables(shape: Shape) -> set[str]:
    return {part.table for part in shape if part.kind == "table"}


def _schemas(shape: Shape) -> set[str]:
    return {part.table for part in shape if part.kind == "schema"}


@dataclass
class Snapshot:
    """What the database held: its shape, row counts, and the rows of small non-empty tables."""

    shape: Shape
    metadata: MetaData  # its tables, reflected: how to create them again
    counts: dict[str, int]
    rows: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)


def _reflect(connection: Connection, shape: Shape) -> MetaData:
    metadata = MetaData()
    metadata.reflect(connection)
    default = connection.dialect.default_schema_name
    for schema in sorted(_schemas(shape) - {default or ""}):
        metadata.reflect(connection, schema=schema)
    if connection.dialect.name == "sqlite":
        _parenthesize_defaults(metadata)
    return metadata


def _parenthesize_defaults(metadata: MetaData) -> None:
    """Wrap reflected SQLite column defaults in parentheses, so they can be created again.

    SQLAlchemy 2.0 reflects ``DEFAULT (strftime(...))`` without its parentheses
    and would render ``DEFAULT strftime(...)``, which SQLite refuses; SQLite
    takes any default in parentheses, a literal too.
    """
    for table in metadata.tables.values():
        for column in table.columns:
            clause = column.server_default
            if isinstance(clause, DefaultClause) and isinstance(clause.arg, TextClause):
                sql = clause.arg.text.strip()
                if not (sql.startswith("(") and sql.endswith(")")):
                    column.server_default = DefaultClause(text(f"({sql})"))


def _rows(connection: Connection, table: Table) -> list[tuple[object, ...]]:
    return [tuple(row) for row in connection.execute(select(table))]


def _same_rows(left: list[tuple[object, ...]], right: list[tuple[object, ...]]) -> bool:
    return sorted(map(repr, left)) == sorted(map(repr, right))


def _counts(connection: Connection, tables: list[Table]) -> dict[str, int]:
    """The row count of each table, by key, in one query."""
    if not tables:
        return {}
    query = select(*(select(func.count()).select_from(t).scalar_subquery() for t in tables))
    return {t.key: int(n) for t, n in zip(tables, connection.execute(query).one(), strict=True)}


def take_snapshot(engine: Engine, previous: Snapshot | None = None) -> Snapshot:
    """Record what the database holds now (see the module docstring).

    Args:
        engine: An engine on the database.
        previous: The last snapshot; its reflected tables are reused while the
            database keeps exactly its shape.
    """
    with engine.connect() as connection:
        shape = read_shape(connection)
        if previous is not None and previous.shape == shape:
            metadata = previous.metadata
        else:
            metadata = _reflect(connection, shape)
        counts = _counts(connection, list(metadata.tables.values()))
        snapshot = Snapshot(shape, metadata, counts)
        for key, count in counts.items():
            if 0 < count <= _MAX_ROWS_KEPT:
                snapshot.rows[key] = _rows(connection, metadata.tables[key])
    return snapshot


def _shape_changes(before: Shape, now: Shape) -> list[str]:
    """One line per part created, dropped or changed; a whole table or schema as one line."""
    created, dropped = now.keys() - before.keys(), before.keys() - now.keys()
    schemas = {part.table for part in created | dropped if part.kind == "schema"}
    tables = {part.table for part in created | dropped if part.kind == "table"}

    def shown(part: Part) -> bool:
        in_schema = "." in part.table and part.table.split(".")[0] in schemas
        if part.kind == "schema":
            return True
        return not in_schema and (part.kind == "table" or part.table not in tables)

    found = [f"{part} was created" for part in sorted(created, key=_order) if shown(part)]
    found += [f"{part} was dropped" for part in sorted(dropped, key=_order) if shown(part)]
    found += [
        f"{part} changed: {before[part]} -> {now[part]}"
        for part in sorted(before.keys() & now.keys())
        if before[part] != now[part]
    ]
    return found


def _order(part: Part) -> tuple[int, Part]:
    return (0 if part.kind == "schema" else 1 if part.kind == "table" else 2, part)


def changes(engine: Engine, before: Snapshot) -> list[str]:
    """What differs from ``before`` now, one line per change; empty when nothing does."""
    with engine.connect() as connection:
        now = read_shape(connection)
        found = _shape_changes(before.shape, now)
        tables = _tables(now)
        altered = {part.table for part in before.shape.keys() ^ now.keys()}
        altered |= {p.table for p in before.shape.keys() & now.keys() if before.shape[p] != now[p]}
        present = [t for t in before.metadata.tables.values() if _name(t) in tables]
        counts = _counts(connection, present)
        for table in sorted(present, key=_name):
            key, count = table.key, counts[table.key]
            if count != before.counts[key]:
                found.append(f"table {_name(table)} held {before.counts[key]} rows, now {count}")
            elif (
                key in before.rows
                and _name(table) not in altered
                and not _same_rows(before.rows[key], _rows(connection, table))
            ):
                found.append(f"rows of table {_name(table)} were changed")
    return found


def _name(table: Table) -> str:
    """A table's name as :class:`Part` spells it."""
    return table.fullname if table.schema else table.name


class NotRestoredError(UserStoreError):
    """The database could not be put back as a snapshot recorded it."""


def _changed_tables(before: Snapshot, now: Shape) -> set[str]:
    """Tables of ``before`` whose shape differs now, and those with foreign keys to them."""
    differ = {part.table for part in before.shape.keys() ^ now.keys() if part.kind != "schema"}
    differ |= {
        part.table for part in before.shape.keys() & now.keys() if before.shape[part] != now[part]
    }
    changed = {_name(t) for t in before.metadata.tables.values() if _name(t) in differ}
    while True:
        dependents = {
            _name(table)
            for table in before.metadata.tables.values()
            for key in table.foreign_keys
            if _name(key.column.table) in changed
        }
        if dependents <= changed:
            return changed
        changed |= dependents


def restore(engine: Engine, before: Snapshot) -> None:
    """Put the database back as ``before`` recorded it, and check that it is.

    New schemas are dropped with what they hold, new tables dropped, tables
    whose shape changed (and those with foreign keys to them) dropped and
    created again as reflected, dropped ones created again; then the rows of
    every table are replaced by the recorded ones, in foreign-key order.

    Raises:
        NotRestoredError: the database still differs from ``before`` (the
            rows of a big table were lost, or a table came back different).
    """
    with engine.begin() as connection:
        shape = read_shape(connection)
        for schema in sorted(_schemas(shape) - _schemas(before.shape)):
            connection.execute(DropSchema(schema, cascade=True))
        shape = read_shape(connection)
        now = _reflect(connection, shape)
        changed = _changed_tables(before, shape)
        lost = sorted(
            _name(table)
            for table in before.metadata.tables.values()
            if _name(table) in changed and before.counts[table.key] and table.key not in before.rows
        )
        if lost:  # (before dropping anything: the rows are still there)
            raise NotRestoredError(
                f"the rows of {', '.join(lost)} are too many to keep, and the table changed"
            )
        known = {_name(table) for table in before.metadata.tables.values()}
        now.drop_all(
            connection,
            tables=[t for t in now.sorted_tables if _name(t) not in known or _name(t) in changed],
        )
        for schema in sorted(_schemas(before.shape) - _schemas(shape)):
            connection.execute(CreateSchema(schema))
        present = _tables(shape) - changed
        before.metadata.create_all(
            connection,
            tables=[t for t in before.metadata.sorted_tables if _name(t) not in present],
        )
        kept = [
            table
            for table in before.metadata.sorted_tables
            if before.counts[table.key] == 0 or table.key in before.rows
        ]
        for table in reversed(kept):
            connection.execute(table.delete())
        for table in kept:
            rows = before.rows.get(table.key)
            if rows:
                keys = [column.key for column in table.columns]
                connection.execute(
                    table.insert(), [dict(zip(keys, row, strict=True)) for row in rows]
                )
    left = changes(engine, before)
    if left:
        raise NotRestoredError("; ".join(left))


def _write_locked(database: str) -> bool:
    """Whether a connection holds a SQLite database's write lock (a transaction left open)."""
    probe = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()
    return False


_OPEN_TRANSACTIONS: Final = {
    "postgresql": (
        "SELECT pid, state || ': ' || left(query, 200) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND state LIKE 'idle in transaction%'"
    ),
    # (Its connections; which of them are in a transaction is read from the InnoDB status:
    # information_schema.innodb_trx is a cache refreshed at most every 100 ms.)
    "mariadb": (
        "SELECT id, CONCAT('connection ', id, ', idle for ', time, ' s') "
        "FROM information_schema.processlist "
        "WHERE db = DATABASE() AND id <> CONNECTION_ID() AND command = 'Sleep'"
    ),
}

_END: Final = {"postgresql": "SELECT pg_terminate_backend(:id)", "mariadb": "KILL :id"}


def open_transactions(engine: Engine) -> dict[object, str]:
    """Connections other than ``engine``'s with a transaction open and idle, by id.

    On SQLite, where no other connection can be seen, a held write lock is
    reported as one under the id ``"sqlite"``.
    """
    if engine.dialect.name == "sqlite":
        locked = _write_locked(str(engine.url.database))
        return {"sqlite": "a connection holds the write lock"} if locked else {}
    with engine.connect() as connection:
        kind = backend(connection)
        found = {row[0]: str(row[1]) for row in connection.execute(text(_OPEN_TRANSACTIONS[kind]))}
        if kind == "mariadb" and found:
            active = _innodb_transactions(connection)
            found = {id_: about for id_, about in found.items() if int(str(id_)) in active}
        return found


def _innodb_transactions(connection: Connection) -> set[int]:
    """The connection ids of MariaDB's active InnoDB transactions."""
    try:
        status = str(connection.exec_driver_sql("SHOW ENGINE INNODB STATUS").one()[2])
    except TEARDOWN_ERRORS:  # (no PROCESS privilege: the cached view, up to 100 ms behind)
        query = "SELECT trx_mysql_thread_id FROM information_schema.innodb_trx"
        return {int(id_) for id_ in connection.exec_driver_sql(query).scalars()}
    return {
        int(match.group(1))
        for block in status.split("\n---TRANSACTION ")[1:]
        if (match := re.match(r"[^\n]*ACTIVE.*?thread id (\d+)", block, re.S))
    }


def end_transactions(engine: Engine, ids: Iterable[object]) -> None:
    """End the server connections of ``ids`` (their transactions roll back)."""
    with engine.connect() as connection:
        statement = text(_END[backend(connection)])
        for id_ in ids:
            try:
                connection.execute(statement, {"id": id_})
            except TEARDOWN_ERRORS:  # (MariaDB: it ended meanwhile)
                continue


def teardown_problems(request: pytest.FixtureRequest) -> list[str]:
    """What the fixtures of ``request``'s test could not end cleanly (a list to add to)."""
    problems: list[str] = request.node.stash.setdefault(_TEARDOWN_PROBLEMS, [])
    return problems


def note_teardown_problem(request: pytest.FixtureRequest, problem: str) -> None:
    """Record what a fixture's teardown could not do, for the isolation check to report."""
    teardown_problems(request).append(problem)
