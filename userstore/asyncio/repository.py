"""``AsyncUserRepository``: :class:`~userstore.UserRepository`'s verbs, as coroutines.

There is one implementation of the rules. Each coroutine runs the sync
repository's method on the ``AsyncSession``'s own sync ``Session``, inside
one greenlet (SQLAlchemy's ``greenlet_spawn``, exactly as ``AsyncSession``
runs its own methods): the driver's awaits happen in the event loop, and
validation, statements, error mapping, duplicate naming, batching and the
rollback-on-failure rule are the sync code's, unchanged. The cost is one
greenlet switch per call (a few microseconds), which ``AsyncSession`` itself
pays on every call too.
"""

from __future__ import annotations

import builtins
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import islice
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeAlias, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import greenlet_spawn

from userstore.bulk import DEFAULT_BATCH_SIZE, Row, UpsertResult, check_batch_size
from userstore.concurrency import release_frames
from userstore.errors import ConfigurationError, DatabaseError, InvalidUserError
from userstore.models import User
from userstore.observability.calls import observed_async
from userstore.repository import UserRepository

_P = ParamSpec("_P")
_T = TypeVar("_T")
_IN_USE: Final = "userstore.in_use"
_Caller: TypeAlias = Callable[..., Awaitable[Any]]


class AsyncUserRepository:
    """Stores and finds users through one ``AsyncSession`` (one unit of work).

    Every verb of :class:`~userstore.UserRepository`, with the same
    arguments, return values, errors and unit-of-work rules, as a coroutine;
    :meth:`iter_all` is an async iterator.

    Args:
        session: The session to work on, usually from
            :func:`~userstore.create_async_session_factory`. The caller owns
            it and closes it.

    Raises:
        InvalidUserError: ``session`` is not an ``AsyncSession``.
        ConfigurationError: the session expires users on commit, so reading
            one afterwards would need the database, outside any greenlet
            (``MissingGreenlet``); use
            :func:`~userstore.create_async_session_factory`, or
            ``expire_on_commit=False``.
    """

    def __init__(self, session: AsyncSession) -> None:
        if not isinstance(session, AsyncSession):
            raise InvalidUserError(
                f"AsyncUserRepository takes an AsyncSession, got {type(session).__name__} "
                "(a sync Session goes to UserRepository)"
            )
        if session.sync_session.expire_on_commit:
            raise ConfigurationError(
                "this AsyncSession expires users on commit, so reading a user afterwards "
                "would need the database outside any greenlet (MissingGreenlet): make sessions "
                "with userstore.create_async_session_factory(engine), or expire_on_commit=False"
            )
        self._session = session
        self._sync = UserRepository(session.sync_session)

    @property
    def session(self) -> AsyncSession:
        """The session this repository works on."""
        return self._session

    def _observed_unit(self) -> object:
        return self._session.sync_session

    def _observed_backend(self) -> str:
        return self._sync._observed_backend()

    async def _call(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``function`` in a greenlet, refusing a second task on the same session."""
        info = self._session.sync_session.info
        if info.get(_IN_USE):
            raise DatabaseError(
                "another task is using this session: an AsyncSession, and every repository "
                "on it, serves one task at a time; give each task a session of its own"
            )
        info[_IN_USE] = True
        try:
            return await _run(function, *args, **kwargs)
        finally:
            info[_IN_USE] = False

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

    def iter_all(self, *, batch_size: int = 1000) -> AsyncUserStream:
        """Stream every user in name order, holding only one batch in memory.

        ``async for user in repo.iter_all(): ...``. Users come in keyset
        pages, one query each (see :meth:`userstore.UserRepository.iter_all`),
        so no cursor stays open between pages and a loop left early holds
        nothing on the server. ``async with repo.iter_all() as users:`` or
        ``await stream.aclose()`` also drops the page in hand at once.

        Raises:
            InvalidUserError: ``batch_size`` is not a positive int (raised by
                this call, before any iteration).
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        check_batch_size(batch_size)
        return AsyncUserStream(self._sync.iter_all(batch_size=batch_size), batch_size, self._call)

    @observed_async("commit")
    async def commit(self) -> None:
        """Write the unit of work atomically; see :meth:`userstore.UserRepository.commit`."""
        await self._call(self._sync.commit)

    async def read_token(self) -> str:
        """A token naming everything committed so far.

        See :meth:`userstore.UserRepository.read_token`.
        """
        return await self._call(self._sync.read_token)

    @observed_async("rollback")
    async def rollback(self) -> None:
        """Discard the unit of work; see :meth:`userstore.UserRepository.rollback`."""
        await self._call(self._sync.rollback)


async def _run(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run sync repository code in one greenlet; an interruption leaves no frames behind."""
    try:
        return await greenlet_spawn(function, *args, **kwargs)  # type: ignore[arg-type]
    except BaseException as error:
        if not isinstance(error, Exception):  # CancelledError, KeyboardInterrupt
            release_frames(error)
        raise


class AsyncUserStream:
    """The users :meth:`AsyncUserRepository.iter_all` yields: an async iterator.

    Users are fetched a page at a time (one query and one greenlet switch per
    page, not per row). Also an async context manager that closes the stream
    on exit.
    """

    def __init__(self, users: Iterator[User], batch_size: int, call: _Caller = _run) -> None:
        self._users: Iterator[User] | None = users
        self._call = call  # the repository's: one task at a time on its session
        self._batch_size = batch_size
        self._buffer: deque[User] = deque()
        self._started = False

    def __aiter__(self) -> AsyncUserStream:
        return self

    async def __anext__(self) -> User:
        if not self._buffer:
            if self._users is None:
                raise StopAsyncIteration
            self._started = True
            batch = await self._call(self._next_batch)
            if not batch:
                self._users = None
                raise StopAsyncIteration
            self._buffer.extend(batch)
        return self._buffer.popleft()

    def _next_batch(self) -> builtins.list[User]:
        assert self._users is not None
        return builtins.list(islice(self._users, self._batch_size))

    async def aclose(self) -> None:
        """Stop streaming and release the cursor now; later iteration yields nothing."""
        users, self._users = self._users, None
        self._buffer.clear()
        close = getattr(users, "close", None)
        if close is not None and self._started:
            await _run(close)

    async def __aenter__(self) -> AsyncUserStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
