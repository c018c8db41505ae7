"""The two flavours of the API, sync and async, behind one blocking interface.

The contract tests are written once, as plain sync calls (``repo.add(user)``,
``repo.session.flush()``). For the async flavour each such call goes through
:class:`Blocking`, which runs the async API's coroutine on one event loop kept
in a thread of its own and waits for its result: the tests exercise the real
``AsyncUserRepository`` and ``AsyncSession``, awaited on a real loop, with no
copy of any test. Calls from several test threads become concurrent tasks on
that one loop, as they would in an async app.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, Final, TypeVar

import pytest
from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    AsyncSessionTransaction,
    AsyncTransaction,
)
from sqlalchemy.orm import Session

import userstore
from userstore.testing import AsyncInMemoryUserRepository, InMemoryUserRepository, InMemoryUserStore
from userstore.testing.fake import InMemorySession

_T = TypeVar("_T")


class _LoopThread:
    """One event loop, running in a daemon thread for the whole test run."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, awaitable: Awaitable[_T]) -> _T:
        """Run ``awaitable`` on the loop and return its result (or raise its error)."""
        if asyncio.iscoroutine(awaitable):
            coroutine = awaitable
        else:

            async def wrapper() -> _T:
                return await awaitable

            coroutine = wrapper()
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop()).result()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="async-flavour-loop", daemon=True
                ).start()
            return self._loop


LOOP: Final = _LoopThread()
"""The loop every async-flavour call of the test run is awaited on."""


class Blocking:
    """A blocking view of an async object: coroutine results are awaited on :data:`LOOP`.

    Attributes and plain methods pass through; a call that returns an
    awaitable is awaited; an async iterator becomes a generator (closed with
    ``aclose()``); async sessions, connections and repositories come back
    wrapped in turn.
    """

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    @property
    def wrapped(self) -> Any:
        """The async object itself."""
        return object.__getattribute__(self, "_target")

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.wrapped, name)
        if inspect.ismethod(value) or inspect.isfunction(value) or inspect.isbuiltin(value):

            def call(*args: Any, **kwargs: Any) -> Any:
                return _blocking(value(*args, **kwargs))

            return call
        return _blocking(value)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.wrapped, name, value)

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        LOOP.run(self.wrapped.__aexit__(*exc_info))

    def __repr__(self) -> str:
        return f"Blocking({self.wrapped!r})"


_WRAPPED_TYPES: Final = (
    AsyncSession,
    AsyncSessionTransaction,
    AsyncConnection,
    AsyncTransaction,
    userstore.AsyncUserRepository,
)


def _blocking(value: Any) -> Any:
    if inspect.isawaitable(value):
        value = LOOP.run(value)
    if isinstance(value, _WRAPPED_TYPES):
        return Blocking(value)
    if hasattr(value, "__anext__"):
        return _iterate(value)
    return value


def _iterate(stream: Any) -> Iterator[Any]:
    # A few items per trip to the loop: one trip per item would cost a task each.
    async def take() -> list[Any]:
        items = []
        async for item in stream:
            items.append(item)
            if len(items) == _ITEMS_PER_TRIP:
                break
        return items

    try:
        while items := LOOP.run(take()):
            yield from items
            del items
    finally:
        if hasattr(stream, "aclose"):
            LOOP.run(stream.aclose())


_ITEMS_PER_TRIP: Final = 50


class FlavouredEngine:
    """An engine of one flavour, and the sessions and repositories the tests open on it."""

    def __init__(self, flavour: str, url: str | URL, **kwargs: Any) -> None:
        self.flavour = flavour
        if flavour == "sync":
            self.engine: Engine | AsyncEngine = userstore.create_engine(url, **kwargs)
        else:
            self.engine = userstore.create_async_engine(url, **kwargs)

    @property
    def sync_engine(self) -> Engine:
        """The sync ``Engine`` underneath (itself, for sync): listen for events here."""
        engine = self.engine
        return engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    def session(self) -> Any:
        """A new session from userstore's factory of this flavour (the caller closes it)."""
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            return Blocking(userstore.create_async_session_factory(engine)())
        return userstore.create_session_factory(engine)()

    def repository(self, session: Any = None) -> Any:
        """A repository of this flavour on ``session`` (a new one if not given)."""
        if session is None:
            session = self.session()
        if isinstance(session, Blocking):
            return Blocking(userstore.AsyncUserRepository(session.wrapped))
        assert isinstance(session, Session)
        return userstore.UserRepository(session)

    def connect(self) -> Any:
        """A connection of this flavour (a context manager; its results are buffered)."""
        return _blocking(self.engine.connect())

    def dispose(self) -> None:
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            LOOP.run(engine.dispose())
        else:
            engine.dispose()


class FlavouredStore:
    """The in-memory fake (:mod:`userstore.testing`) of one flavour, shaped as a FlavouredEngine.

    ``session()`` opens a unit of work on the store and ``repository()`` puts
    the fake repository of the flavour on it (async behind :class:`Blocking`),
    so the contract tests run on the fake unchanged. What only a database has
    (an engine to listen to, a connection) fails the test, saying so.
    """

    def __init__(self, flavour: str, store: InMemoryUserStore) -> None:
        self.flavour = flavour
        self.store = store

    def session(self) -> InMemorySession:
        """A new unit of work on the store (the caller closes it)."""
        return self.store.session()

    def repository(self, session: InMemorySession | None = None) -> Any:
        """A fake repository of this flavour on ``session`` (a new one if not given)."""
        if session is None:
            session = self.session()
        if self.flavour == "sync":
            return InMemoryUserRepository(session)
        return Blocking(AsyncInMemoryUserRepository(session))

    @property
    def sync_engine(self) -> Engine:
        """Refused: the fake sends no SQL."""
        pytest.fail(_NO_DATABASE.format(what="an engine"))

    def connect(self) -> Any:
        """Refused: the fake has no connection."""
        pytest.fail(_NO_DATABASE.format(what="a connection"))

    def dispose(self) -> None:
        """Nothing to release."""


_NO_DATABASE: Final = (
    "this test needs {what}, which the in-memory fake does not have: mark it "
    "@pytest.mark.not_on_fake(reason=...)"
)

FLAVOURS: Final = ("sync", "async")
