"""How SQLite transactions begin, and one safe connection for an in-memory database.

File databases run in WAL mode with deferred transactions: a unit of work
that only reads never takes a lock, so readers never wait for each other or
for a writer, and a reader left open never stalls a writer. A unit of work
that writes takes the write lock at its first write, waiting up to the busy
timeout. One that reads first and then writes may find that another writer
got in between: SQLite then refuses the write at once (``SQLITE_BUSY`` or
``SQLITE_BUSY_SNAPSHOT``), before anything of it is written, and userstore
raises :class:`~userstore.errors.TransientDatabaseError` so the whole unit of
work can be retried. Verbs that know they will write (bulk writes, delete,
migrations) declare it with :func:`write_intent`, and begin with
``BEGIN IMMEDIATE`` instead, so they wait for the lock rather than fail.

An in-memory database lives inside one connection, so every session of an
engine must use that same connection: :class:`OneConnectionPool` hands it to
one unit of work at a time, across threads, and refuses at once a second
session in the thread that already holds it (it could never get its turn).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import sqlalchemy
from sqlalchemy import URL, Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from userstore.errors import DatabaseError

BUSY_TIMEOUT_SECONDS: Final = 30.0
# How long a thread waits for an in-memory database's connection that it holds itself.
SAME_THREAD_WAIT_SECONDS: Final = 1.0

_WRITE_INTENT: ContextVar[bool] = ContextVar("userstore_sqlite_write_intent", default=False)


@contextmanager
def write_intent() -> Iterator[None]:
    """Declare that a transaction begun inside this block is going to write.

    On SQLite, a transaction begun while this is active starts with
    ``BEGIN IMMEDIATE``: it waits for the write lock up front, so it cannot
    fail later on the move from reading to writing. Other backends ignore
    it. It affects only a transaction that begins inside the block.
    """
    token = _WRITE_INTENT.set(True)
    try:
        yield
    finally:
        _WRITE_INTENT.reset(token)


def is_memory_database(url: URL) -> bool:
    """Whether a SQLite URL names an in-memory database (which lives in one connection)."""
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def engine_options(url: URL, connect_args: dict[str, Any], options: dict[str, Any]) -> None:
    """Fill in the connect arguments and engine options every SQLite engine gets."""
    connect_args["timeout"] = BUSY_TIMEOUT_SECONDS
    if is_memory_database(url):
        # One connection, used by every thread in turn.
        connect_args["check_same_thread"] = False
        connect_args["factory"] = KeptOpenConnection
        options["poolclass"] = OneConnectionPool


def configure(engine: Engine, url: URL) -> None:
    """Install the connect and begin hooks described in this module's docstring."""
    file_database = not is_memory_database(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module, which would
        # otherwise begin lazily on its own terms and commit before DDL; the
        # "begin" hook below issues our own BEGIN instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        if file_database:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sqlalchemy.Connection) -> None:
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # each statement commits on its own, as asked
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _WRITE_INTENT.get() else "BEGIN")


class KeptOpenConnection(sqlite3.Connection):
    """An in-memory database's connection, which SQLAlchemy must not end.

    SQLAlchemy closes a connection it invalidates (after an interrupted
    statement, say) and opens another: for an in-memory database that would
    be a new, empty database, and every commit lost. Here ``close()`` only
    rolls back what was in progress and retires the connection;
    :class:`OneConnectionPool` copies the database into its successor, and
    :meth:`OneConnectionPool.dispose` ends it for real.
    """

    retired = False

    def close(self) -> None:
        self.retired = True
        if self.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # an interrupted statement may block it
                self.rollback()

    def close_for_real(self) -> None:
        """End the connection, and with it the in-memory database."""
        super().close()


class OneConnectionPool(StaticPool):
    """The one connection of an in-memory database, lent to one checkout at a time.

    Another thread waits up to ``timeout`` seconds for its turn, then gets
    SQLAlchemy's pool ``TimeoutError`` (a
    :class:`~userstore.errors.TransientDatabaseError` once translated). The
    thread that holds the connection usually cannot wait for itself (two
    sessions interleaved in one thread), so it waits only a moment, then
    raises :class:`~userstore.errors.DatabaseError` saying so; the moment
    lets a thread pool that hands a session's end to another thread go on.
    The connection is never replaced while the pool lives, whatever
    SQLAlchemy invalidates: only :meth:`dispose` (``engine.dispose()``) ends
    the database.
    """

    # (``timeout`` is positional-or-keyword so that create_engine(pool_timeout=...) finds it.)
    def __init__(self, creator: Any, timeout: float = BUSY_TIMEOUT_SECONDS, **kw: Any) -> None:
        super().__init__(creator, **kw)
        self._timeout = timeout
        self._turn = threading.Lock()
        self._holder: int | None = None
        self._kept: Any = None
        connect = self._invoke_creator

        def the_one_connection(record: ConnectionPoolEntry) -> Any:
            kept = self._kept
            if kept is not None and not kept.retired:
                return kept
            fresh = connect(record)
            if kept is not None:  # SQLAlchemy gave up on it: carry the database over
                kept.backup(fresh)
                kept.close_for_real()
            self._kept = fresh
            return fresh

        self._invoke_creator = the_one_connection  # type: ignore[assignment]

    def recreate(self) -> OneConnectionPool:
        self.logger.info("Pool recreating")
        return self.__class__(
            creator=self._creator,
            timeout=self._timeout,
            recycle=self._recycle,
            reset_on_return=self._reset_on_return,
            pre_ping=self._pre_ping,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def dispose(self) -> None:
        super().dispose()
        kept, self._kept = self._kept, None
        if isinstance(kept, KeptOpenConnection):
            kept.close_for_real()

    def _do_get(self) -> ConnectionPoolEntry:
        me = threading.get_ident()
        waited = 0.0
        if self._holder == me:
            waited = min(self._timeout, SAME_THREAD_WAIT_SECONDS)
            acquired = self._turn.acquire(timeout=waited)
            if not acquired and self._holder == me:
                raise DatabaseError(
                    "this in-memory SQLite database has one connection, and another session in "
                    "this thread is using it: commit, roll back or close that session first "
                    "(or use a SQLite file, where sessions can overlap)"
                )
            # else: the turn went to another thread meanwhile; wait for it as anyone would
        else:
            acquired = False
        if not acquired and not self._turn.acquire(timeout=self._timeout - waited):
            raise sa_exc.TimeoutError(
                f"waited {self._timeout:g} s for this in-memory SQLite database's one "
                "connection, which another unit of work is using"
            )
        self._holder = me
        try:
            return super()._do_get()
        except BaseException:
            self._release()
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        self._release()

    def _release(self) -> None:
        if self._holder is not None:
            self._holder = None
            self._turn.release()
