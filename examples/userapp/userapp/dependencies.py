"""Where a request gets its unit of work: FastAPI dependencies, overridable in tests.

Production: :func:`get_session_factory` hands out the session factory the app
built at start-up. The API tests override it with ``userstore.testing``'s
``async_user_session_factory`` (every session joins the test's transaction),
or override :func:`get_user_source` with the in-memory fake's
``store.async_repository``. Writes go through
:func:`userstore.run_unit_of_work_async` with the source, so a transient
failure reruns the whole unit of work; reads get one repository per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeAlias, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from userstore import AsyncUserRepository, AsyncUserRepositoryProtocol

UserSource: TypeAlias = Callable[[], AsyncSession] | Callable[[], AsyncUserRepositoryProtocol]
"""A session factory, or any zero-argument callable returning an async repository."""


def get_session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    """The session factory the app built at start-up (see :func:`userapp.app.create_app`)."""
    return cast(async_sessionmaker[AsyncSession], request.app.state.session_factory)


SessionFactory = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]


def get_user_source(session_factory: SessionFactory) -> UserSource:
    """Where the user endpoints' units of work come from: by default, the database."""
    return session_factory


Source = Annotated[UserSource, Depends(get_user_source)]


async def user_repository(source: Source) -> AsyncIterator[AsyncUserRepositoryProtocol]:
    """A repository for one request that only reads; its session is closed afterwards."""
    opened = source()
    if isinstance(opened, AsyncSession):
        async with opened:  # closing rolls back: nothing to commit after reads
            yield AsyncUserRepository(opened)
    else:
        yield opened


# scope="function": the session closes (and its connection goes back to the pool) when the
# handler returns, before the response is sent. Users stay readable after it closes.
Repository = Annotated[AsyncUserRepositoryProtocol, Depends(user_repository, scope="function")]
