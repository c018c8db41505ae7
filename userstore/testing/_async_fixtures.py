"""The plugin's async fixtures, declared for pytest-asyncio (auto and strict mode).

Imported by :mod:`userstore.testing.plugin` only when pytest-asyncio is
installed. The fixtures take their event loop's scope from pytest-asyncio's
``asyncio_default_fixture_loop_scope``, like the app's own fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from userstore.errors import ConfigurationError
from userstore.testing._isolation import TEARDOWN_ERRORS, note_teardown_problem

if TYPE_CHECKING:
    from userstore.asyncio import AsyncUserRepository


@pytest_asyncio.fixture
async def async_user_session_factory(
    userstore_async_engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Async sessions that all join this test's one transaction, rolled back after the test.

    Settings as :func:`userstore.create_async_session_factory`'s; ``commit()``
    and ``rollback()`` of a session release or roll back a savepoint.

    Raises:
        ConfigurationError: the test is not an ``async def`` test run by
            pytest-asyncio (a sync test could not await the sessions).
    """
    if not pytest_asyncio.is_async_test(request.node):
        raise ConfigurationError(
            f"userstore.testing: {request.node.name} is not an async test run by "
            "pytest-asyncio, so it cannot await async_user_session_factory / "
            "async_user_repository: make it an 'async def' test (marked with "
            "@pytest.mark.asyncio unless asyncio_mode = auto), or use user_session_factory / "
            "user_repository"
        )
    connection = await userstore_async_engine.connect()
    transaction = await connection.begin()
    yield async_sessionmaker(
        bind=connection,
        join_transaction_mode="create_savepoint",
        autoflush=True,
        expire_on_commit=False,
    )
    try:
        await transaction.rollback()
    except TEARDOWN_ERRORS as exc:
        note_teardown_problem(request, f"rolling back the test's transaction failed: {exc}")
        await connection.invalidate()
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def async_user_repository(
    async_user_session_factory: async_sessionmaker[AsyncSession], request: pytest.FixtureRequest
) -> AsyncIterator[AsyncUserRepository]:
    """An :class:`~userstore.AsyncUserRepository` on a session of ``async_user_session_factory``."""
    # (Imported here: a sync-only app, without greenlet, still loads the plugin.)
    from userstore.asyncio import AsyncUserRepository

    session = async_user_session_factory()
    yield AsyncUserRepository(session)
    try:
        await session.close()
    except TEARDOWN_ERRORS as exc:
        note_teardown_problem(request, f"closing the repository's session failed: {exc}")
