"""Bulk writes: rows in, validated batches out, and the fastest correct statement per backend.

Inserts use PostgreSQL's ``COPY`` and a driver ``executemany`` on SQLite and
MariaDB (PyMySQL rewrites it into multi-row INSERTs). Upserts are one native
statement per batch: ``INSERT … ON CONFLICT … DO UPDATE`` on SQLite and
PostgreSQL (fed there by ``unnest`` of two arrays), ``INSERT … ON DUPLICATE
KEY UPDATE`` on MariaDB; ``updated_at`` moves only when the number changes.
Counting inserted and updated rows never reads before writing: PostgreSQL
counts ``xmax = 0`` (inserted) rows in the same statement,
MariaDB counts in session variables inside the statement, and SQLite counts
through a function that only the update branch calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Any, Final, TypeAlias, cast

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.util import await_only

from userstore.db_errors import backend_of
from userstore.errors import InvalidUserError
from userstore.models import User
from userstore.timestamps import MARIADB_UTC_NOW, POSTGRESQL_UTC_NOW, SQLITE_UTC_NOW
from userstore.validation import (
    CONTROL_CHARACTER,
    LIMIT_MAX,
    NAME_MAX_LENGTH,
    NUMBER_MAX,
    NUMBER_MIN,
    validate_name,
    validate_number,
)

Row: TypeAlias = User | tuple[str, int | None] | Mapping[str, Any]
Batch: TypeAlias = list[tuple[str, int | None]]

DEFAULT_BATCH_SIZE: Final = 10_000
_ROW_KEYS: Final = frozenset({"name", "number"})


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did, row by row.

    Attributes:
        inserted: Rows whose name was new.
        updated: Existing rows whose number changed (their ``updated_at`` moved).
        unchanged: Existing rows that already had that number (left untouched).
    """

    inserted: int
    updated: int
    unchanged: int


def check_batch_size(batch_size: object) -> None:
    """Raise :class:`InvalidUserError` unless ``batch_size`` is an int in 1..``LIMIT_MAX``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidUserError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size > LIMIT_MAX:
        raise InvalidUserError(f"batch_size must be at most {LIMIT_MAX}, got {batch_size}")


def validated_batches(rows: Iterable[Row], batch_size: int) -> Iterator[Batch]:
    """Yield ``(name, number)`` batches, each row validated before its batch is yielded.

    Raises:
        InvalidUserError: naming the position of the first bad row.
    """
    check_batch_size(batch_size)
    try:
        iterator = iter(rows)
    except TypeError:
        raise InvalidUserError(
            f"rows must be an iterable of users, pairs or mappings, got {type(rows).__name__}"
        ) from None
    start = 0
    while chunk := list(islice(iterator, batch_size)):
        if _all_plain_valid_pairs(chunk):
            yield cast(Batch, chunk)
        else:
            yield [_validated(start + offset, row) for offset, row in enumerate(chunk)]
        start += len(chunk)


_FIRST: Final = itemgetter(0)
_SECOND: Final = itemgetter(1)


def _all_plain_valid_pairs(chunk: list[Any]) -> bool:
    """Whether every row is a valid ``(str, int | None)`` pair, checked a batch at a time.

    The same rules as :mod:`userstore.validation`, applied with C-level passes
    over the whole batch. Anything else (another row shape, an int subclass,
    any invalid value) returns False, and the row-by-row path decides: it
    converts what it can and names the position of the first bad row.
    """
    if set(map(type, chunk)) != {tuple} or set(map(len, chunk)) != {2}:
        return False
    # Two C-level passes; zip(*chunk) would build an iterator per row and set
    # off full garbage collections on large batches (measured: PostgreSQL W1).
    names = list(map(_FIRST, chunk))
    numbers = list(map(_SECOND, chunk))
    if set(map(type, names)) != {str}:
        return False
    lengths = list(map(len, names))
    if min(lengths) < 1 or max(lengths) > NAME_MAX_LENGTH:
        return False
    joined = "".join(names)
    if CONTROL_CHARACTER.search(joined) is not None:
        return False
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            return False
    present = [number for number in numbers if number is not None]
    if not present:
        return True
    return (
        set(map(type, present)) == {int}
        and min(present) >= NUMBER_MIN
        and max(present) <= NUMBER_MAX
    )


def _validated(position: int, row: object) -> tuple[str, int | None]:
    if isinstance(row, tuple) and len(row) == 2:
        name, number = row
    elif isinstance(row, User):
        name, number = row.name, row.number
    elif isinstance(row, Mapping) and "name" in row and _ROW_KEYS.issuperset(row):
        name, number = row["name"], row.get("number")
    else:
        raise InvalidUserError(
            f"row {position}: expected a User, a (name, number) pair or a mapping with "
            f"'name' and 'number', got {row!r:.80}"
        )
    try:
        return validate_name(name), validate_number(number)
    except InvalidUserError as exc:
        raise InvalidUserError(f"row {position}: {exc}") from None


def last_of_each_name(batch: Batch) -> Batch:
    """Collapse rows that repeat a name within one batch (the last one wins), in name order.

    In name order, concurrent upserts of overlapping names lock their rows in
    one order, so they never deadlock on each other.
    """
    return sorted(dict(batch).items())


# -- inserts -------------------------------------------------------------------

_INSERT_SQL: Final = {
    "sqlite": "INSERT INTO users (name, number) VALUES (?, ?)",
    "mariadb": "INSERT INTO users (name, number) VALUES (%s, %s)",
}
_COPY_SQL: Final = "COPY users (name, number) FROM STDIN"


def insert_batch(connection: Connection, batch: Batch) -> None:
    """Insert one batch with the backend's fastest correct statement."""
    if connection.dialect.name == "postgresql":
        _copy(connection, batch)
    else:
        connection.exec_driver_sql(_INSERT_SQL[backend_of(connection.dialect.name)], batch)


def _copy(connection: Connection, batch: Batch) -> None:
    dbapi_connection: Any = connection.connection.dbapi_connection
    dbapi = connection.dialect.loaded_dbapi
    try:
        _COPY_BY_DRIVER[(connection.dialect.driver, connection.dialect.is_async)](
            dbapi_connection, batch
        )
    except dbapi.Error as error:
        # Raised as SQLAlchemy raises every driver error, so it maps the same way.
        invalidated = connection.dialect.is_disconnect(error, dbapi_connection, None)
        if invalidated:
            connection.invalidate(error)
        raise sa_exc.DBAPIError.instance(
            _COPY_SQL,
            None,
            error,
            dbapi.Error,
            connection_invalidated=invalidated,
            dialect=connection.dialect,
        ) from error


def _psycopg_copy(dbapi_connection: Any, batch: Batch) -> None:
    cursor = dbapi_connection.cursor()
    try:
        with cursor.copy(_COPY_SQL) as copy:
            copy.write(_copy_text(batch))
    finally:
        cursor.close()


def _psycopg_async_copy(dbapi_connection: Any, batch: Batch) -> None:
    async def copy_in() -> None:
        async with dbapi_connection.driver_connection.cursor() as cursor:  # noqa: SIM117
            async with cursor.copy(_COPY_SQL) as copy:
                await copy.write(_copy_text(batch))

    await_only(copy_in())


def _asyncpg_copy(dbapi_connection: Any, batch: Batch) -> None:
    # asyncpg's binary COPY, inside the adapter's transaction (the repository's
    # savepoint has begun it; it is begun here if not, never left to autocommit).
    try:
        if dbapi_connection._transaction is None and not dbapi_connection.autocommit:
            await_only(dbapi_connection._start_transaction())
        await_only(
            dbapi_connection.driver_connection.copy_records_to_table(
                "users", records=batch, columns=_COPY_COLUMNS
            )
        )
    except Exception as error:  # an asyncpg error, translated as the adapter translates them
        dbapi_connection._handle_exception(error)


_COPY_COLUMNS: Final = ("name", "number")
# (driver, async): SQLAlchemy names psycopg's async dialect's driver "psycopg" too.
_COPY_BY_DRIVER: Final = {
    ("psycopg", False): _psycopg_copy,
    ("psycopg", True): _psycopg_async_copy,
    ("asyncpg", True): _asyncpg_copy,
}


def _copy_text(batch: Batch) -> str:
    """The batch in COPY's text format, built in one go.

    Validated names hold no control characters, so of COPY's special
    characters only the backslash can occur, and it is doubled.
    """
    return "".join(
        f"{name.replace(_BACKSLASH, _BACKSLASH * 2) if _BACKSLASH in name else name}\t"
        f"{_COPY_NULL if number is None else number}\n"
        for name, number in batch
    )


_BACKSLASH: Final = "\\"
_COPY_NULL: Final = "\\N"


# -- upserts -------------------------------------------------------------------

# The batch travels as two arrays: one round trip and one statement per batch,
# which measured twice as fast here as psycopg's pipelined executemany.
_POSTGRESQL_UPSERT: Final = (
    "WITH upserted AS ("
    " INSERT INTO users (name, number)"
    " SELECT * FROM unnest({names}::varchar[], {numbers}::integer[])"
    " ON CONFLICT (name) DO UPDATE SET number = excluded.number,"
    f" updated_at = {POSTGRESQL_UTC_NOW}"
    " WHERE users.number IS DISTINCT FROM excluded.number"
    " RETURNING xmax = 0 AS inserted)"
    " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
    " FROM upserted"
)
# psycopg takes %s placeholders, asyncpg $1.
_POSTGRESQL_UPSERTS: Final = {
    "format": _POSTGRESQL_UPSERT.format(names="%s", numbers="%s"),
    "pyformat": _POSTGRESQL_UPSERT.format(names="%s", numbers="%s"),
    "numeric_dollar": _POSTGRESQL_UPSERT.format(names="$1", numbers="$2"),
}
_SQLITE_COUNTER: Final = "userstore_count_update"
_SQLITE_UPSERT: Final = (
    "INSERT INTO users (name, number) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
    f"number = excluded.number, updated_at = {_SQLITE_COUNTER}({SQLITE_UTC_NOW}) "
    "WHERE users.number IS NOT excluded.number"
)
# Assignments run left to right: updated_at is decided before number changes.
_MARIADB_UPSERT: Final = (
    "INSERT INTO users (name, number) VALUES (%s, %s) ON DUPLICATE KEY UPDATE "
    "updated_at = IF((@userstore_matched := @userstore_matched + 1) > 0 "
    "AND number <=> VALUES(number), updated_at, "
    f"IF((@userstore_changed := @userstore_changed + 1) > 0, {MARIADB_UTC_NOW}, NULL)), "
    "number = VALUES(number)"
)


def upsert_batch(connection: Connection, batch: Batch) -> UpsertResult:
    """Insert or update one batch (names unique within it) in one native statement."""
    backend = backend_of(connection.dialect.name)
    if backend == "postgresql":
        names = [name for name, _ in batch]
        numbers = [number for _, number in batch]
        statement = _POSTGRESQL_UPSERTS[connection.dialect.paramstyle]
        inserted, updated = connection.exec_driver_sql(statement, (names, numbers)).one()
        return UpsertResult(inserted, updated, len(batch) - inserted - updated)
    if backend == "sqlite":
        return _sqlite_upsert(connection, batch)
    connection.exec_driver_sql("SET @userstore_matched = 0, @userstore_changed = 0")
    connection.exec_driver_sql(_MARIADB_UPSERT, batch)
    matched, changed = connection.exec_driver_sql(
        "SELECT @userstore_matched, @userstore_changed"
    ).one()
    return UpsertResult(len(batch) - int(matched), int(changed), int(matched) - int(changed))


def _sqlite_upsert(connection: Connection, batch: Batch) -> UpsertResult:
    dbapi_connection: Any = connection.connection.dbapi_connection
    install_sqlite_update_counter(dbapi_connection)  # (done already at connect, normally)
    updates = _UPDATE_COUNTS[id(dbapi_connection)]
    updates[0] = 0
    written = connection.exec_driver_sql(_SQLITE_UPSERT, batch).rowcount
    return UpsertResult(written - updates[0], updates[0], len(batch) - written)


# Per open connection (by id), how many rows the upsert's update branch touched.
# The function is registered once, when the connection is made: SQLite refuses
# to register one while a statement is active (an upsert inside an iter_all loop).
_UPDATE_COUNTS: Final[dict[int, list[int]]] = {}


def install_sqlite_update_counter(dbapi_connection: Any) -> None:
    """Register the SQL function the SQLite upsert counts its updates with."""
    if id(dbapi_connection) in _UPDATE_COUNTS:
        return
    updates = [0]

    def count_update(value: object) -> object:
        updates[0] += 1
        return value

    dbapi_connection.create_function(_SQLITE_COUNTER, 1, count_update)
    _UPDATE_COUNTS[id(dbapi_connection)] = updates


def forget_sqlite_update_counter(dbapi_connection: Any) -> None:
    """Drop a closed connection's counter (its id may be reused)."""
    _UPDATE_COUNTS.pop(id(dbapi_connection), None)
