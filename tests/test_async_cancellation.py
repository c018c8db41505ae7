"""A task cancelled mid-unit-of-work: nothing half-written, CancelledError as itself, a clean pool.

A client that disconnects cancels its request's task wherever it is. Each point here is hit
deterministically, never by timing: a ``before_cursor_execute`` (or ``commit``) listener cancels
the very task that is about to send the chosen statement, or the test steps the event loop until
the task is parked waiting for a pooled connection, then cancels it. Afterwards the task has ended
with ``CancelledError`` (not another error), the unit of work is all or nothing, the database
holds nothing open for it (PostgreSQL: no connection "idle in transaction"; MariaDB: no InnoDB
transaction; SQLite: another writer takes the write lock at once), the pool has its connection
back, and the next unit of work on the same engine works.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import URL, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

import userstore
from tests.async_support import (
    Unit,
    async_engine_and_sessions,
    cancel_the_current_task,
    cancelling_at,
    checked_out,
    no_cycle_collection,
    queue_pool_options,
    run_unit,
    start_unit,
    task_outcome,
    until_suspended_in,
)
from tests.databases import BACKENDS, migrated_database, stored_users
from userstore import AsyncUserRepository, User

Stored = dict[str, int | None]

COMMITTED: Stored = {"kept": 1}
"""What each test commits before the unit of work it cancels."""

# How long the server may take to end the transaction of a connection that was closed under it.
SERVER_CLEANUP_SECONDS = 5.0


class Database:
    """A migrated database, an async userstore engine on it, and plain-SQL checks of its state."""

    def __init__(self, backend: str, url: URL, engine: AsyncEngine) -> None:
        self.backend = backend
        self.url = url
        self.engine = engine
        self.factory = userstore.create_async_session_factory(engine)
        self._plain = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT"
        )

    def close(self) -> None:
        self._plain.dispose()

    def stored(self) -> Stored:
        """Every stored user's number by name, read with plain SQL."""
        return stored_users(self.url)

    def held_open(self) -> list[str]:
        """What the database holds open for units of work: nothing, once they all ended."""
        if self.backend == "sqlite":
            return _sqlite_write_lock_holders(self.url)
        query = {
            "postgresql": "SELECT pid, state, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            "mariadb": "SELECT t.trx_mysql_thread_id, t.trx_state, p.info "
            "FROM information_schema.innodb_trx AS t "
            "JOIN information_schema.processlist AS p ON p.id = t.trx_mysql_thread_id "
            "WHERE p.db = DATABASE()",
        }[self.backend]
        with self._plain.connect() as connection:
            return [str(tuple(row)) for row in connection.execute(text(query))]

    async def settled(self) -> list[str]:
        """:meth:`held_open`, once the server has had a moment to end closed connections' work.

        A server ends the transaction of a connection closed under it when it notices the
        close, a few milliseconds later; a transaction still open after that is a leak.
        SQLite has no server: a closed connection's lock is gone when its close returns.
        """
        loop = asyncio.get_running_loop()
        grace = 0.0 if self.backend == "sqlite" else SERVER_CLEANUP_SECONDS
        deadline = loop.time() + grace
        while (held := self.held_open()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return held


def _sqlite_write_lock_holders(url: URL) -> list[str]:
    """[] when another writer can take SQLite's write lock at once, else why it cannot."""
    assert url.database is not None
    other = sqlite3.connect(url.database, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        return [f"another writer cannot take the write lock: {error}"]
    finally:
        other.close()
    return []


@asynccontextmanager
async def _database(backend: str, url: URL, **options: Any) -> AsyncIterator[Database]:
    async with async_engine_and_sessions(url, **options) as (engine, _):
        database = Database(backend, url, engine)
        try:
            async with database.factory() as session:
                repo = AsyncUserRepository(session)
                await repo.add_many(COMMITTED.items())
                await repo.commit()
            yield database
        finally:
            database.close()


def _run_scenario(
    backend: str,
    tmp_path: Path,
    scenario: Callable[[Database], Awaitable[None]],
    **engine_options: Any,
) -> None:
    """Run ``scenario`` on a migrated database that holds COMMITTED, with no cycle collection."""

    async def run(url: URL) -> None:
        async with _database(backend, url, **engine_options) as database:
            await scenario(database)

    with migrated_database(backend, tmp_path) as url, no_cycle_collection():
        asyncio.run(run(url))


async def _assert_clean_and_usable(database: Database, stored: Stored) -> None:
    """Nothing held open, the pool whole, ``stored`` stored, and the next unit of work works."""
    assert await database.settled() == []
    assert checked_out(database.engine) == 0
    assert database.stored() == stored
    async with database.factory() as session:
        repo = AsyncUserRepository(session)
        await repo.add(User(name="next", number=7))
        await repo.commit()
        assert await repo.count() == len(stored) + 1
    assert database.stored() == {**stored, "next": 7}
    assert checked_out(database.engine) == 0


# The units of work that get cancelled. Each writes several statements' worth, so a unit
# cancelled halfway would show in the table if it were not all or nothing.


async def _add_and_commit(repo: AsyncUserRepository) -> None:
    for i in range(3):
        await repo.add(User(name=f"new{i}", number=i))
    await repo.commit()


async def _flush_then_commit(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="new0", number=0))
    assert await repo.count() == 2  # the INSERT is sent; the transaction stays open
    await repo.add(User(name="new1", number=1))
    await repo.commit()


async def _flush_then_add_many(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="new", number=0))
    await repo.count()
    await repo.add_many([(f"bulk{i:03d}", i) for i in range(50)], batch_size=10)
    await repo.commit()


async def _flush_then_upsert_many(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="new", number=0))
    await repo.count()
    await repo.upsert_many([("kept", 99), ("upserted", 5)])
    await repo.commit()


async def _flush_then_get_staged(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="new0", number=0))
    await repo.count()
    await repo.add(User(name="new1", number=1))
    await repo.get("new1")  # autoflushes new1's INSERT first
    await repo.commit()


async def _flush_then_get(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="new0", number=0))
    await repo.count()
    await repo.get("kept")
    await repo.commit()


async def _flush_then_stream(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="new0", number=0))
    await repo.count()
    async with repo.iter_all(batch_size=10) as users:
        async for _ in users:
            pass
    await repo.commit()


async def _delete_and_commit(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="new0", number=0))
    await repo.delete("kept")
    await repo.commit()


@dataclass(frozen=True)
class Point:
    """Where a unit of work is cancelled: before the nth statement starting with a prefix."""

    unit: Unit
    prefixes: tuple[str, ...]
    nth: int = 1


POINTS = {
    "inside commit, at its flush's first INSERT": Point(_add_and_commit, ("INSERT",)),
    "inside commit, after an earlier flush": Point(_flush_then_commit, ("INSERT",), 2),
    "inside add_many, after two of its batches": Point(_flush_then_add_many, ("SAVEPOINT",), 3),
    "inside upsert_many": Point(_flush_then_upsert_many, ("WITH", "INSERT"), 2),
    "inside a get's autoflush": Point(_flush_then_get_staged, ("INSERT",), 2),
    "inside a get's SELECT": Point(_flush_then_get, ("SELECT USERS.NAME",)),
    "inside iter_all's SELECT": Point(_flush_then_stream, ("SELECT USERS.NAME",)),
    "inside delete's flush": Point(_delete_and_commit, ("DELETE",)),
}


def _cases() -> list[Any]:
    cases = []
    for backend in BACKENDS:
        for name, point in POINTS.items():
            cases.append(pytest.param(backend, point, id=f"{backend}-{name}"))
    return cases


@pytest.mark.parametrize(("backend", "point"), _cases())
def test_a_task_cancelled_mid_unit_of_work_writes_nothing_and_leaves_a_clean_pool(
    backend: str, tmp_path: Path, point: Point
):
    async def scenario(database: Database) -> None:
        with cancelling_at(database.engine, point.prefixes, point.nth) as seen:
            task = await run_unit(database.factory, point.unit)

        assert len(seen) == point.nth  # the point was reached, and nothing ran past it
        assert task_outcome(task) == "cancelled"
        await _assert_clean_and_usable(database, COMMITTED)

    _run_scenario(backend, tmp_path, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_task_cancelled_while_its_commit_is_sent_commits_all_or_nothing(
    backend: str, tmp_path: Path
):
    async def scenario(database: Database) -> None:
        commits: list[object] = []

        def cancel(connection: object) -> None:  # just before the driver's COMMIT
            commits.append(connection)
            cancel_the_current_task()

        event.listen(database.engine.sync_engine, "commit", cancel)
        try:
            task = await run_unit(database.factory, _add_and_commit)
        finally:
            event.remove(database.engine.sync_engine, "commit", cancel)

        assert len(commits) == 1
        assert task_outcome(task) == "cancelled"
        everything = {**COMMITTED, "new0": 0, "new1": 1, "new2": 2}
        stored = database.stored()
        assert stored in (COMMITTED, everything)  # the COMMIT landed, or it did not
        await _assert_clean_and_usable(database, stored)

    _run_scenario(backend, tmp_path, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_task_cancelled_while_waiting_for_a_pooled_connection_takes_nothing_from_the_pool(
    backend: str, tmp_path: Path
):
    async def scenario(database: Database) -> None:
        async with database.factory() as holder_session:
            holder = AsyncUserRepository(holder_session)
            await holder.add(User(name="held", number=2))
            await holder.count()  # holds the one connection, in a transaction
            waiter = start_unit(database.factory, _add_and_commit)
            # Waiting in the pool's queue (SQLAlchemy 2.0 waits on it through wait_for).
            await until_suspended_in(waiter, "Queue.get", "wait_for")

            waiter.cancel()
            await asyncio.wait({waiter})
            assert task_outcome(waiter) == "cancelled"
            await holder.commit()

        await _assert_clean_and_usable(database, {**COMMITTED, "held": 2})

    # One connection, so the second unit of work must wait for it; a lost slot would
    # make the last unit of work wait pool_timeout and fail.
    options = queue_pool_options(pool_size=1, max_overflow=0, pool_timeout=5)
    _run_scenario(backend, tmp_path, scenario, **options)
