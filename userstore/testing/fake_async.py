"""The async twin of the in-memory fake: :class:`AsyncInMemoryUserRepository`.

Every verb of :class:`~userstore.testing.InMemoryUserRepository`, as a
coroutine, with the same rules (there is one implementation: each coroutine
calls the sync fake, which never waits on anything). ``iter_all`` returns an
async stream, for ``async for``, ``aclose()`` and ``async with``, as
:class:`~userstore.AsyncUserStream` does.
"""

from __future__ import annotations

import asyncio
import builtins
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import islice
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeAlias, TypeVar

from userstore.bulk import DEFAULT_BATCH_SIZE, Row, UpsertResult, check_batch_size
from userstore.errors import DatabaseError
from userstore.models import User
from userstore.observability.calls import observed_async
from userstore.testing.fake import InMemorySession, InMemoryUserRepository, InMemoryUserStore

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Caller: TypeAlias = Callable[..., Awaitable[Any]]
_IN_USE: Final = (
    "another task is using this session: an AsyncSession, and every repository "
    "on it, serves one task at a time; give each task a session of its own"
)


class AsyncInMemoryUserRepository:
    """:class:`~userstore.AsyncUserRepository`'s verbs over an in-memory unit of work.

    Args:
        source: An :class:`~userstore.testing.InMemoryUserStore` (the
            repository gets a unit of work of its own) or an
            :class:`~userstore.testing.fake.InMemorySession` to share.

    Raises:
        InvalidUserError: ``source`` is neither.
    """

    def __init__(self, source: InMemoryUserStore | InMemorySession) -> None:
        self._sync = InMemoryUserRepository(source)

    @property
    def session(self) -> InMemorySession:
        """The unit of work this repository works on (its methods are plain calls)."""
        return self._sync.session

    def _observed_unit(self) -> object:
        return self._sync.session

    def _observed_backend(self) -> str:
        return "memory"

    async def _call(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a verb of the sync fake, refusing a second task on the same unit of work.

        As :class:`~userstore.AsyncUserRepository` does: one task at a time
        per session, else :class:`~userstore.DatabaseError`. A call that read or
        wrote the store then yields to the event loop once, still holding the
        unit of work, as a database call awaits its driver (a call that only
        stages, like ``add``, awaits nothing there either).
        """
        session = self._sync.session
        if session._in_use:
            raise DatabaseError(_IN_USE)
        session._in_use = True
        store = session.store
        accesses = store._accesses
        try:
            try:
                return function(*args, **kwargs)
            finally:
                if store._accesses != accesses:
                    await asyncio.sleep(0)
        finally:
            session._in_use = False

    @observed_async("add")
    async def add(self, user: User) -> User:
        """Stage a new user; see :meth:`userstore.UserRepository.add`."""
        return await self._call(self._sync.add, user)

    @observed_async("get")
    async def get(self, name: str) -> User | None:
        """Return the user called ``name`` or ``None``; see :meth:`userstore.UserRepository.get`."""
        return await self._call(self._sync.get, name)

    @observed_async("get_one")
    async def get_one(self, name: str) -> User:
        """Return the user called ``name``; see :meth:`userstore.UserRepository.get_one`."""
        return await self._call(self._sync.get_one, name)

    @observed_async("exists")
    async def exists(self, name: str) -> bool:
        """Return whether the user ``name`` exists; see :meth:`userstore.UserRepository.exists`."""
        return await self._call(self._sync.exists, name)

    @observed_async("count")
    async def count(self) -> int:
        """Return the number of users; see :meth:`userstore.UserRepository.count`."""
        return await self._call(self._sync.count)

    @observed_async("delete")
    async def delete(self, name: str) -> None:
        """Delete the user called ``name``; see :meth:`userstore.UserRepository.delete`."""
        await self._call(self._sync.delete, name)

    @observed_async("list")
    async def list(
        self, *, after: str | None = None, limit: int | None = None
    ) -> builtins.list[User]:
        """Return one keyset page of users; see :meth:`userstore.UserRepository.list`."""
        return await self._call(self._sync.list, after=after, limit=limit)

    @observed_async("add_many")
    async def add_many(self, users: Iterable[Row], *, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Insert many users; see :meth:`userstore.UserRepository.add_many`."""
        return await self._call(self._sync.add_many, users, batch_size=batch_size)

    @observed_async("upsert")
    async def upsert(self, name: str, number: int | None) -> User:
        """Insert or update one user; see :meth:`userstore.UserRepository.upsert`."""
        return await self._call(self._sync.upsert, name, number)

    @observed_async("upsert_many")
    async def upsert_many(
        self, rows: Iterable[Row], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> UpsertResult:
        """Insert or update many users; see :meth:`userstore.UserRepository.upsert_many`."""
        return await self._call(self._sync.upsert_many, rows, batch_size=batch_size)

    def iter_all(self, *, batch_size: int = 1000) -> AsyncInMemoryUserStream:
        """Stream every user in name order, a keyset page at a time.

        Raises:
            InvalidUserError: ``batch_size`` is not a positive int (raised by
                this call, before any iteration).
        """
        check_batch_size(batch_size)
        return AsyncInMemoryUserStream(
            self._sync.iter_all(batch_size=batch_size), batch_size, self._call
        )

    @observed_async("commit")
    async def commit(self) -> None:
        """Publish the unit of work atomically; see :meth:`userstore.UserRepository.commit`."""
        await self._call(self._sync.commit)

    async def read_token(self) -> str:
        """A read token; see :meth:`userstore.testing.InMemoryUserRepository.read_token`."""
        return await self._call(self._sync.read_token)

    @observed_async("rollback")
    async def rollback(self) -> None:
        """Discard the unit of work; see :meth:`userstore.UserRepository.rollback`."""
        await self._call(self._sync.rollback)


class AsyncInMemoryUserStream:
    """What :meth:`AsyncInMemoryUserRepository.iter_all` returns: users in name order.

    An async iterator that takes a page at a time (through the repository,
    so one task at a time), and an async context manager that closes the
    stream on exit.
    """

    def __init__(self, users: Iterator[User], batch_size: int, call: _Caller) -> None:
        self._users: Iterator[User] | None = users
        self._call = call
        self._batch_size = batch_size
        self._buffer: deque[User] = deque()

    def __aiter__(self) -> AsyncInMemoryUserStream:
        return self

    async def __anext__(self) -> User:
        if not self._buffer:
            if self._users is None:
                raise StopAsyncIteration
            self._buffer.extend(await self._call(self._next_batch))
            if not self._buffer:
                self._users = None
                raise StopAsyncIteration
        return self._buffer.popleft()

    def _next_batch(self) -> builtins.list[User]:
        assert self._users is not None
        return builtins.list(islice(self._users, self._batch_size))

    async def aclose(self) -> None:
        """Stop streaming and drop the page in hand; later iteration yields nothing."""
        users, self._users = self._users, None
        self._buffer.clear()
        close = getattr(users, "close", None)
        if close is not None:
            close()

    async def __aenter__(self) -> AsyncInMemoryUserStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
