"""What the logging and tracing tests share: each verb called once, failing calls, units of work.

The verbs are called from this module, so a record's ``pathname`` (the app's line that made
the call) is this file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from sqlalchemy import URL

import userstore
from userstore import (
    AsyncUserRepository,
    DuplicateUserError,
    User,
    UserNotFoundError,
    UserRepository,
)
from userstore.testing import InMemoryUserStore

# What ``sync_verbs`` and ``async_verbs`` call, in order: (operation, rows it reports).
EVERY_CALL = [
    ("add", 1),
    ("commit", None),
    ("get", 1),
    ("get", 0),
    ("get_one", 1),
    ("exists", 1),
    ("exists", 0),
    ("count", 1),
    ("upsert", 1),
    ("upsert_many", 2),
    ("add_many", 2),
    ("list", 5),
    ("delete", 1),
    ("iter_all", 3),  # a full page
    ("iter_all", 1),  # then a short one
    ("rollback", None),
]


def sync_verbs(repo: Any) -> None:
    """Call each public verb of a sync repository, on an empty table: ``EVERY_CALL``."""
    repo.add(User(name="ann", number=1))
    repo.commit()
    repo.get("ann")
    repo.get("nobody")
    repo.get_one("ann")
    repo.exists("ann")
    repo.exists("nobody")
    repo.count()
    repo.upsert("bob", 2)
    repo.upsert_many([("bob", 3), ("cid", 4), ("ann", 1)])
    repo.add_many([("dan", 5), ("eve", 6)])
    repo.list()
    repo.delete("eve")
    assert len(list(repo.iter_all(batch_size=3))) == 4
    repo.rollback()


async def async_verbs(repo: Any) -> None:
    """Call each public verb of an async repository, on an empty table: ``EVERY_CALL``."""
    await repo.add(User(name="ann", number=1))
    await repo.commit()
    await repo.get("ann")
    await repo.get("nobody")
    await repo.get_one("ann")
    await repo.exists("ann")
    await repo.exists("nobody")
    await repo.count()
    await repo.upsert("bob", 2)
    await repo.upsert_many([("bob", 3), ("cid", 4), ("ann", 1)])
    await repo.add_many([("dan", 5), ("eve", 6)])
    await repo.list()
    await repo.delete("eve")
    assert len([user async for user in repo.iter_all(batch_size=3)]) == 4
    await repo.rollback()


def sync_failures(sessions: Any) -> None:
    """Store ann; then, in a unit of work of its own, two calls that fail.

    ``get_one`` of a missing user (UserNotFoundError), then a ``commit`` of ann again
    (DuplicateUserError, with the driver's code).
    """
    with sessions() as session:
        repo = UserRepository(session)
        repo.add(User(name="ann", number=1))
        repo.commit()
    with sessions() as session:
        repo = UserRepository(session)
        with pytest.raises(UserNotFoundError):
            repo.get_one("nobody")
        repo.add(User(name="ann", number=2))
        with pytest.raises(DuplicateUserError):
            repo.commit()


async def async_failures(_engine: Any, sessions: Any) -> None:
    """``sync_failures`` on an async session factory (a ``work`` for ``run_async``)."""
    async with sessions() as session:
        repo = AsyncUserRepository(session)
        await repo.add(User(name="ann", number=1))
        await repo.commit()
    async with sessions() as session:
        repo = AsyncUserRepository(session)
        with pytest.raises(UserNotFoundError):
            await repo.get_one("nobody")
        await repo.add(User(name="ann", number=2))
        with pytest.raises(DuplicateUserError):
            await repo.commit()


def run_async(database_url: URL, work: Callable[[Any, Any], Any]) -> Any:
    """Run ``work(engine, session_factory)`` on a fresh async engine, on a loop of its own."""

    async def main() -> Any:
        engine = userstore.create_async_engine(database_url)
        try:
            return await work(engine, userstore.create_async_session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


class Units:
    """Opens units of work on the target under test, sync and async: the fakes on memory."""

    def __init__(self, backend: str, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self.store: InMemoryUserStore | None = None
        self.url: URL | None = None
        if backend == "memory":
            self.store = request.getfixturevalue("memory_store")
        else:
            self.url = request.getfixturevalue("database_url")

    @contextmanager
    def sync(self) -> Iterator[Any]:
        if self.store is not None:
            yield self.store.repository()
            return
        assert self.url is not None
        engine = userstore.create_engine(self.url)
        try:
            with userstore.create_session_factory(engine)() as session:
                yield UserRepository(session)
        finally:
            engine.dispose()

    @asynccontextmanager
    async def async_(self) -> AsyncIterator[Any]:
        if self.store is not None:
            yield self.store.async_repository()
            return
        assert self.url is not None
        engine = userstore.create_async_engine(self.url)
        try:
            async with userstore.create_async_session_factory(engine)() as session:
                yield AsyncUserRepository(session)
        finally:
            await engine.dispose()
