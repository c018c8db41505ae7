"""Everything the variants of one backend use: engines, session factories and raw connections."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

import userstore
from benchmarks.async_drivers import RawAsyncConnection
from benchmarks.drivers import RawConnection
from userstore.errors import UserStoreError

_T = TypeVar("_T")


@dataclass
class AsyncStack:
    """The async side of one benchmark database, on one event loop kept for the whole run.

    ``engine`` is userstore's async engine (``userstore.create_async_engine``
    on the same URL as the sync engine: aiosqlite, asyncpg or asyncmy),
    shared by the userstore async, AsyncSession and advanced-alchemy async
    variants; ``raw`` is the same driver used directly. Pooled connections
    belong to the loop, so every async run goes through :meth:`run`.
    """

    runner: asyncio.Runner
    engine: AsyncEngine
    raw: RawAsyncConnection
    userstore_sessions: async_sessionmaker[AsyncSession]
    sessions: async_sessionmaker[AsyncSession]

    @classmethod
    def open(cls, backend: str, url: URL) -> AsyncStack:
        runner = asyncio.Runner()
        try:
            engine = userstore.create_async_engine(url)
            raw = runner.run(RawAsyncConnection.open(backend, url))
        except BaseException:
            runner.close()
            raise
        return cls(
            runner=runner,
            engine=engine,
            raw=raw,
            userstore_sessions=userstore.create_async_session_factory(engine),
            sessions=async_sessionmaker(engine),
        )

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` to its end on this stack's event loop."""
        return self.runner.run(coroutine)

    def warm_up(self) -> None:
        async def connect() -> None:
            async with self.engine.connect() as connection:
                (await connection.exec_driver_sql("SELECT 1")).all()

        self.run(connect())

    def close(self) -> None:
        async def close() -> None:
            await self.raw.close()
            await self.engine.dispose()

        try:
            self.run(close())
        finally:
            self.runner.close()


@dataclass
class Stack:
    """The connections to one benchmark database.

    ``engine`` is userstore's (``userstore.create_engine``), shared by the
    userstore, Core, ORM and advanced-alchemy variants so that they differ
    only in the library; ``default_engine`` is a plain
    ``sqlalchemy.create_engine`` for the "ORM (default engine)" variant.
    ``asynchronous`` is the async side, or ``None`` (``async_unavailable``
    says why) when it was not asked for or cannot run here.
    """

    backend: str
    url: URL
    engine: Engine
    default_engine: Engine
    raw: RawConnection
    userstore_sessions: sessionmaker[Session]
    orm_sessions: sessionmaker[Session]
    default_engine_sessions: sessionmaker[Session]
    asynchronous: AsyncStack | None = None
    async_unavailable: str | None = "async variants not selected"

    @classmethod
    def open(cls, backend: str, url: URL, *, with_async: bool = True) -> Stack:
        engine = userstore.create_engine(url)
        default_engine = sqlalchemy.create_engine(url)
        stack = cls(
            backend=backend,
            url=url,
            engine=engine,
            default_engine=default_engine,
            raw=RawConnection.open(backend, url),
            userstore_sessions=userstore.create_session_factory(engine),
            orm_sessions=sessionmaker(engine),
            default_engine_sessions=sessionmaker(default_engine),
        )
        if with_async:
            try:
                stack.asynchronous = AsyncStack.open(backend, url)
                stack.async_unavailable = None
            except (ImportError, UserStoreError) as exc:
                stack.async_unavailable = f"async driver unavailable: {exc}"
        return stack

    def warm_up(self) -> None:
        """Open each engine's pooled connection now, so no timed run pays for connecting."""
        for engine in (self.engine, self.default_engine):
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1").all()
        if self.asynchronous is not None:
            self.asynchronous.warm_up()

    def close(self) -> None:
        try:
            if self.asynchronous is not None:
                self.asynchronous.close()
        finally:
            self.raw.close()
            self.engine.dispose()
            self.default_engine.dispose()
