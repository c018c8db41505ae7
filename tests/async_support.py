"""Helpers for the async tests' scenarios: an engine always disposed, tasks and their states.

Each async test runs a scenario with ``asyncio.run`` on an async userstore engine of its own.
The helpers here open that engine, run units of work in tasks of their own, cancel a task at
a chosen statement, and wait for a task to reach a state (never for a delay).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NamedTuple

from sqlalchemy import URL, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool

import userstore
from userstore import AsyncUserRepository

Factory = async_sessionmaker[AsyncSession]
Unit = Callable[[AsyncUserRepository], Awaitable[None]]

STATE_TIMEOUT_SECONDS = 10.0
"""How long a task may take to reach the state a test waits for; reached in milliseconds."""


class AsyncEngineAndSessions(NamedTuple):
    """An async userstore engine and userstore's session factory on it, as an app holds them."""

    engine: AsyncEngine
    factory: Factory


@asynccontextmanager
async def async_engine_and_sessions(
    url: URL | str, **options: Any
) -> AsyncIterator[AsyncEngineAndSessions]:
    """Open an async userstore engine on ``url`` (with ``options``); dispose it when done."""
    engine = userstore.create_async_engine(url, **options)
    try:
        yield AsyncEngineAndSessions(engine, userstore.create_async_session_factory(engine))
    finally:
        await engine.dispose()


def checked_out(engine: AsyncEngine) -> int:
    """Connections checked out of the engine's pool (none can stay out of SQLAlchemy 2.0's
    NullPool, its default for async SQLite files: each is closed on its return)."""
    pool = engine.sync_engine.pool
    return pool.checkedout() if isinstance(pool, QueuePool) else 0


def queue_pool_options(**options: Any) -> dict[str, Any]:
    """Pool options for a test about pool waits: on every backend and SQLAlchemy version,
    a queue pool (2.0's NullPool, for async SQLite files, has no size to wait on)."""
    return {"poolclass": AsyncAdaptedQueuePool, **options}


def start_unit(factory: Factory, unit: Unit) -> asyncio.Task[None]:
    """Start ``unit`` in a task of its own, on a session of its own."""

    async def work() -> None:
        async with factory() as session:
            await unit(AsyncUserRepository(session))

    return asyncio.create_task(work())


async def run_unit(factory: Factory, unit: Unit) -> asyncio.Task[None]:
    """Run ``unit`` in a task of its own, on a session of its own, and wait for its end."""
    task = start_unit(factory, unit)
    await asyncio.wait({task})
    return task


@contextmanager
def cancelling_at(
    engine: AsyncEngine, prefixes: tuple[str, ...], nth: int = 1
) -> Iterator[list[str]]:
    """Cancel the task that is about to send the ``nth`` statement starting with a prefix.

    Yields the matching statements seen, so a test can check its point was reached.
    """
    seen: list[str] = []

    def cancel(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith(prefixes):
            seen.append(statement)
            if len(seen) == nth:
                cancel_the_current_task()

    event.listen(engine.sync_engine, "before_cursor_execute", cancel)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", cancel)


def cancel_the_current_task() -> None:
    """Cancel the task running this code (in an engine event: the task sending the SQL)."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()


def task_outcome(task: asyncio.Task[Any]) -> str:
    """How a finished task ended: "cancelled", "finished", or the error it raised."""
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return "finished" if error is None else f"{type(error).__name__}: {error}"


def suspended_in(task: asyncio.Task[Any]) -> list[str]:
    """The qualified names of the coroutines ``task`` is suspended in, outermost first."""
    names = []
    awaited: Any = task.get_coro()
    while awaited is not None and getattr(awaited, "cr_frame", None) is not None:
        names.append(awaited.cr_frame.f_code.co_qualname)
        awaited = awaited.cr_await
    return names


async def until_suspended_in(task: asyncio.Task[Any], *coroutine_names: str) -> None:
    """Let the event loop run until ``task`` is suspended inside one of ``coroutine_names``.

    A state, not a delay: the wait ends as soon as the task gets there (its database calls
    before that take real time, not just turns of the loop).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STATE_TIMEOUT_SECONDS
    while not set(coroutine_names) & set(suspended_in(task)):
        assert not task.done(), task_outcome(task)
        assert loop.time() < deadline, f"never in {coroutine_names}: {suspended_in(task)}"
        await asyncio.sleep(0.001)


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Keep the cycle collector from running: no guarantee may wait for it to run.

    Otherwise whatever a reference cycle keeps alive (an exception's traceback holds every
    frame it passed through, and their locals) would be freed whenever the collector happens
    to run, and a test would pass or fail by that luck.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()  # what the block left to the collector goes now, not in a later test
