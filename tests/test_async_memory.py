"""In-memory SQLite on an async engine: one connection that tasks take in turn.

The database lives inside one aiosqlite connection, so userstore's async engine lends that
connection to one unit of work at a time (``AsyncOneConnectionPool``): a second task waits,
without blocking the event loop, until the first one's unit of work ends. Data a unit of work
committed survives a task cancelled later mid-statement, and ``engine.dispose()`` ends the
database (and the connection's worker thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import userstore
from tests.async_support import (
    AsyncEngineAndSessions,
    Factory,
    Unit,
    async_engine_and_sessions,
    cancelling_at,
    no_cycle_collection,
    run_unit,
    until_suspended_in,
)
from tests.databases import BACKENDS
from userstore import AsyncUserRepository, User, migrations

pytestmark = pytest.mark.skipif("sqlite" not in BACKENDS, reason="SQLite is not under test")

# The same in-memory database, asked for two ways: the async driver's URL, and the sync URL
# that create_async_engine turns into it.
MEMORY_URLS = ["sqlite+aiosqlite://", "sqlite:///:memory:"]


@asynccontextmanager
async def _memory_database(url: str, **options: Any) -> AsyncIterator[AsyncEngineAndSessions]:
    """An async engine on a new in-memory database, migrated through that engine itself."""
    async with async_engine_and_sessions(url, **options) as opened:
        await migrations.upgrade_async(opened.engine)
        yield opened


async def _names(factory: Factory) -> list[str]:
    async with factory() as session:
        return [user.name for user in await AsyncUserRepository(session).list()]


async def _add(factory: Factory, name: str) -> None:
    async with factory() as session:
        repo = AsyncUserRepository(session)
        await repo.add(User(name=name, number=len(name)))
        await repo.commit()


async def _until_waiting_for_its_turn(task: asyncio.Task[Any]) -> None:
    """Step the event loop until ``task`` waits for the in-memory database's connection."""
    await until_suspended_in(task, "AsyncOneConnectionPool._take_turn")


@pytest.mark.parametrize("url", MEMORY_URLS)
def test_in_memory_a_second_task_waits_for_the_first_ones_commit_then_sees_it(url: str):
    async def scenario() -> list[str]:
        async with _memory_database(url) as (_, factory):
            events: list[str] = []
            release = asyncio.Event()

            async def first() -> None:
                async with factory() as session:
                    repo = AsyncUserRepository(session)
                    await repo.add(User(name="first", number=1))
                    await repo.count()  # flushed: this unit of work holds the connection
                    await release.wait()
                    events.append("first commits")
                    await repo.commit()
                    events.append("first committed")

            async def second() -> None:
                async with factory() as session:
                    repo = AsyncUserRepository(session)
                    events.append(f"second counts {await repo.count()}")
                    await repo.add(User(name="second", number=2))
                    await repo.commit()

            holder = asyncio.create_task(first())
            await until_suspended_in(holder, "Event.wait")  # flushed, holding the connection
            waiter = asyncio.create_task(second())
            await _until_waiting_for_its_turn(waiter)
            for _ in range(50):  # the loop runs on: the waiter does not block it, nor get in
                await asyncio.sleep(0)
            assert events == []
            assert not waiter.done()

            release.set()
            await asyncio.gather(holder, waiter)
            assert await _names(factory) == ["first", "second"]
            return events

    assert asyncio.run(scenario()) == ["first commits", "first committed", "second counts 1"]


async def _doomed_add(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="doomed", number=1))
    await repo.commit()


async def _doomed_add_many(repo: AsyncUserRepository) -> None:
    await repo.add_many([(f"doomed{i:02d}", i) for i in range(30)], batch_size=10)
    await repo.commit()


async def _doomed_delete(repo: AsyncUserRepository) -> None:
    await repo.add(User(name="doomed", number=1))
    await repo.delete("kept")
    await repo.commit()


# (unit of work, the statement it is cancelled at, and which one of them)
CANCELLED_UNITS = [
    pytest.param(_doomed_add, "INSERT", 1, id="at commit's INSERT"),
    pytest.param(_doomed_add_many, "SAVEPOINT", 2, id="between add_many's batches"),
    pytest.param(_doomed_delete, "DELETE", 1, id="at delete's DELETE"),
]


@pytest.mark.parametrize(("unit", "prefix", "nth"), CANCELLED_UNITS)
@pytest.mark.parametrize("url", MEMORY_URLS)
def test_in_memory_a_task_cancelled_mid_statement_loses_nothing_committed(
    url: str,
    unit: Unit,
    prefix: str,
    nth: int,
):
    async def scenario() -> None:
        # A short pool_timeout: a turn the cancelled task kept fails the test in seconds.
        async with _memory_database(url, pool_timeout=5) as (engine, factory):
            await _add(factory, "kept")
            with cancelling_at(engine, (prefix,), nth) as seen:
                task = await run_unit(factory, unit)

            assert len(seen) == nth
            assert task.cancelled()
            assert await _names(factory) == ["kept"]  # rolled back; the commit before kept
            await _add(factory, "next")  # and the next unit of work works
            assert await _names(factory) == ["kept", "next"]

    with no_cycle_collection():
        asyncio.run(scenario())


def test_in_memory_a_task_cancelled_while_waiting_for_its_turn_passes_the_turn_on():
    async def scenario() -> None:
        # A short pool_timeout: a turn that was never passed on fails the test in seconds.
        async with _memory_database("sqlite://", pool_timeout=5) as (_, factory):
            async with factory() as session:
                holder = AsyncUserRepository(session)
                await holder.add(User(name="held", number=1))
                await holder.count()  # holds the one connection
                cancelled = asyncio.create_task(_add(factory, "cancelled"))
                await _until_waiting_for_its_turn(cancelled)
                patient = asyncio.create_task(_add(factory, "patient"))
                await _until_waiting_for_its_turn(patient)

                cancelled.cancel()
                await asyncio.wait({cancelled})
                assert cancelled.cancelled()
                await holder.commit()

            await patient  # it got the turn the cancelled task never took
            assert await _names(factory) == ["held", "patient"]

    asyncio.run(scenario())


def _threads_started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        thread for thread in threading.enumerate() if thread.is_alive() and thread not in before
    ]


async def _until_no_thread_started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Wait (a second at most) for the threads started since ``before`` to end; return the rest."""
    for _ in range(100):
        if not (left := _threads_started_since(before)):
            break
        await asyncio.sleep(0.01)
    return left


@pytest.mark.parametrize("url", MEMORY_URLS)
def test_in_memory_engine_dispose_ends_the_database_and_its_thread(url: str):
    async def scenario() -> None:
        before = set(threading.enumerate())
        engine = userstore.create_async_engine(url)
        try:
            await migrations.upgrade_async(engine)
            factory = userstore.create_async_session_factory(engine)
            await _add(factory, "jenny")
            assert await _names(factory) == ["jenny"]
            assert _threads_started_since(before) != []  # the connection's worker thread

            await engine.dispose()

            assert await _until_no_thread_started_since(before) == []
            # The engine still works, on a new database: empty, not even migrated.
            assert await migrations.current_async(engine) is None
        finally:
            await engine.dispose()
        assert await _until_no_thread_started_since(before) == []

    asyncio.run(scenario())
