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

import asyncio
import collections
import contextlib
import sqlite3
import sys
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
from sqlalchemy.util import await_only

from userstore.bulk import forget_sqlite_update_counter, install_sqlite_update_counter
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
    it. It affects only a transaction that begins inside the block. A
    routing session (:mod:`userstore.routing`) sends the block's reads to the
    primary: they decide what is written.
    """
    token = _WRITE_INTENT.set(True)
    try:
        yield
    finally:
        _WRITE_INTENT.reset(token)


def intends_to_write() -> bool:
    """Whether the caller is inside :func:`write_intent`."""
    return _WRITE_INTENT.get()


def is_memory_database(url: URL) -> bool:
    """Whether a SQLite URL names an in-memory database (which lives in one connection)."""
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def engine_options(
    url: URL, connect_args: dict[str, Any], options: dict[str, Any], *, asynchronous: bool = False
) -> None:
    """Fill in the connect arguments and engine options every SQLite engine gets."""
    connect_args["timeout"] = BUSY_TIMEOUT_SECONDS
    if not is_memory_database(url):
        # (An async file engine keeps SQLAlchemy's default pool: AsyncAdaptedQueuePool
        # from 2.1, NullPool, a connection and thread per checkout, on 2.0.)
        return
    if asynchronous:
        # One connection, used by every task in turn (aiosqlite gives it a thread of its own).
        options["poolclass"] = AsyncOneConnectionPool
    else:
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
        install_sqlite_update_counter(dbapi_connection)

    @event.listens_for(engine, "close")
    @event.listens_for(engine, "close_detached")
    def _on_close(dbapi_connection: DBAPIConnection, *_: object) -> None:
        forget_sqlite_update_counter(dbapi_connection)

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

    # SQLAlchemy names a pool's logger after its class's module, which would put the
    # pool's chatter under the ``userstore`` logger: it stays under sqlalchemy.pool.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.StaticPool"

    # (``timeout`` is positional-or-keyword so that create_engine(pool_timeout=...) finds it.)
    def __init__(self, creator: Any, timeout: float = BUSY_TIMEOUT_SECONDS, **kw: Any) -> None:
        super().__init__(creator, **kw)
        self._timeout = timeout
        self._turn = threading.Lock()
        self._holder: int | None = None
        self._kept: Any = None
        self._connect = self._invoke_creator
        self._invoke_creator = self._the_one_connection  # type: ignore[assignment]

    def _the_one_connection(self, record: ConnectionPoolEntry) -> Any:
        kept = self._kept
        if kept is not None and not kept.retired:
            return kept
        fresh = self._connect(record)
        if kept is not None:  # SQLAlchemy gave up on it: carry the database over
            kept.backup(fresh)
            kept.close_for_real()
        self._kept = fresh
        return fresh

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


class AsyncOneConnectionPool(OneConnectionPool):
    """:class:`OneConnectionPool` for an async engine (aiosqlite): tasks take turns.

    The turn is awaited, so a task waiting for it never blocks the event
    loop; the rules are the same: another task waits up to ``timeout``
    seconds, the task that holds the connection a moment only. SQLAlchemy
    closes a connection it invalidates (a task cancelled mid-statement, say);
    here that close is skipped, and the connection, rolled back, serves the
    next checkout: aiosqlite finishes an abandoned statement on its own
    thread, so the connection stays sound. :meth:`dispose` ends it for real.
    """

    def __init__(self, creator: Any, timeout: float = BUSY_TIMEOUT_SECONDS, **kw: Any) -> None:
        super().__init__(creator, timeout, **kw)
        self._task_holder: object = None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _the_one_connection(self, record: ConnectionPoolEntry) -> Any:
        kept = self._kept
        if kept is None:
            kept = self._kept = self._connect(record)
        elif kept.driver_connection.in_transaction:
            kept.rollback()  # what the invalidated checkout left open
        return kept

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        if connection is not self._kept:
            super()._close_connection(connection, terminate=terminate)

    def dispose(self) -> None:
        kept, self._kept = self._kept, None
        StaticPool.dispose(self)
        record_connection = self.__dict__.get("connection")
        if kept is not None and (
            record_connection is None or record_connection.dbapi_connection is not kept
        ):
            super()._close_connection(kept)

    def _do_get(self) -> ConnectionPoolEntry:
        me = asyncio.current_task()
        await_only(self._take_turn(me))
        try:
            return StaticPool._do_get(self)
        except BaseException:
            self._release()
            raise

    async def _take_turn(self, me: object) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        own_deadline = loop.time() + min(self._timeout, SAME_THREAD_WAIT_SECONDS)
        while self._task_holder is not None:
            mine = self._task_holder is me
            remaining = (own_deadline if mine else deadline) - loop.time()
            if remaining <= 0:
                if mine:
                    raise DatabaseError(
                        "this in-memory SQLite database has one connection, and another session "
                        "in this task is using it: commit, roll back or close that session "
                        "first (or use a SQLite file, where sessions can overlap)"
                    )
                raise sa_exc.TimeoutError(
                    f"waited {self._timeout:g} s for this in-memory SQLite database's one "
                    "connection, which another unit of work is using"
                )
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif self._task_holder is None and sys.exc_info()[0] is not None:
                    self._wake_next()  # woken but leaving (cancelled): pass the turn on
        self._task_holder = me

    def _release(self) -> None:
        if self._task_holder is not None:
            self._task_holder = None
            self._wake_next()

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
                return


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
