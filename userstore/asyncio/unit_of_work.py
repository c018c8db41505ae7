"""``run_unit_of_work_async``: :func:`userstore.run_unit_of_work` for asyncio apps.

The same rules, arguments, checks and pauses (see :mod:`userstore.unit_of_work`);
the work is awaited, the pauses are ``asyncio.sleep`` (tests replace ``_sleep``),
and a cancelled task is never retried.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast, overload

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from userstore.asyncio.repository import AsyncUserRepository
from userstore.errors import InvalidUserError, TransientDatabaseError
from userstore.protocols import AsyncUserRepositoryProtocol
from userstore.unit_of_work import (
    AT_COMMIT,
    COMMITTED,
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    IN_THE_WORK,
    OPENING,
    AttemptLog,
    check_callable,
    check_keeps_users_readable,
    check_repository,
    retry_policy,
)

__all__ = ["run_unit_of_work_async"]

_T = TypeVar("_T")
_R = TypeVar("_R", bound=AsyncUserRepositoryProtocol)

# Looked up at each use, so a test can replace it.
_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


@overload
async def run_unit_of_work_async(
    source: Callable[[], AsyncSession],
    work: Callable[[AsyncUserRepository], Awaitable[_T]],
    *,
    attempts: int = ...,
    backoff: float = ...,
    max_backoff: float = ...,
) -> _T: ...


@overload
async def run_unit_of_work_async(
    source: Callable[[], _R],
    work: Callable[[_R], Awaitable[_T]],
    *,
    attempts: int = ...,
    backoff: float = ...,
    max_backoff: float = ...,
) -> _T: ...


async def run_unit_of_work_async(
    source: Callable[[], AsyncSession] | Callable[[], AsyncUserRepositoryProtocol],
    work: Callable[[Any], Awaitable[_T]],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = DEFAULT_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
) -> _T:
    """Await ``work`` in a unit of work, commit it, and run it again after a transient failure.

    :func:`userstore.run_unit_of_work`, for asyncio: each attempt opens a new
    unit of work from ``source`` (an ``AsyncSession`` from
    :func:`~userstore.create_async_session_factory`, on which the work gets an
    :class:`~userstore.AsyncUserRepository`, closed after the attempt; or an
    async repository, such as
    :class:`~userstore.testing.AsyncInMemoryUserRepository` from
    ``store.async_repository``, committed or rolled back but not closed),
    awaits ``work(repository)``, commits, and returns the work's result. A
    :class:`~userstore.errors.TransientDatabaseError` rolls back and runs the
    whole work again after a jittered ``asyncio.sleep`` (no connection is held
    meanwhile), up to ``attempts`` runs; anything else rolls back and is
    raised at once. A cancelled task (``CancelledError``, a timeout) is never
    retried and writes nothing of the work; a cancellation during a pause
    simply ends the runner.

    The caveats of :func:`userstore.run_unit_of_work` hold: the work must let
    transient errors propagate and must not commit; its result must not need
    the closed session; and a retried work must be idempotent, since a commit
    whose outcome is unknown may have been written.

    Args:
        source: An async session factory, or a zero-argument callable
            returning an async repository
            (:class:`~userstore.protocols.AsyncUserRepositoryProtocol`).
            Called once per attempt.
        work: An async function called with the repository; does the unit of
            work's reads and writes and returns its result.
        attempts: Runs in all, the first one included.
        backoff: Seconds; the pause before the first retry is drawn from
            ``[0, backoff]``, and the range doubles for each later retry.
        max_backoff: Seconds; no pause is longer.

    Returns:
        What the last, committed, run of ``work`` returned.

    Raises:
        InvalidUserError: an argument is invalid (raised before ``source`` or
            ``work`` is called), ``work(repository)`` returned something that
            cannot be awaited, or ``source()`` returned neither an
            ``AsyncSession`` nor an async repository.
        ConfigurationError: ``source()`` returned a session that expires
            users on commit (``AsyncUserRepository`` refuses it).
        TransientDatabaseError: every attempt failed transiently: the last
            attempt's error, with a note (``__notes__``) for each attempt
            (see :func:`userstore.run_unit_of_work`).
        Exception: whatever else the work or the commit raised, unchanged;
            the unit of work was rolled back.
    """
    policy = retry_policy(attempts, backoff, max_backoff)
    check_callable("source", source)
    check_callable("work", work)
    log = AttemptLog("run_unit_of_work_async", policy)
    attempt = 1
    while True:
        stage = OPENING
        opened: object = None  # the attempt's repository, which its retry record names
        try:
            async with _opened(source) as repository:
                opened = repository
                stage = IN_THE_WORK
                result = await _undone_on_failure(repository, lambda: _awaited(work(repository)))
                stage = AT_COMMIT
                await _undone_on_failure(repository, repository.commit)
                stage = COMMITTED
                return result
        except TransientDatabaseError as error:
            if stage == COMMITTED:  # closing failed: the work is written, never run it again
                raise
            if attempt >= policy.attempts:
                log.giving_up(stage, error, opened)
                raise
            pause = log.retrying(attempt, stage, error, opened)
        opened = None
        await _sleep(pause)
        attempt += 1


@asynccontextmanager
async def _opened(source: Callable[[], object]) -> AsyncIterator[AsyncUserRepositoryProtocol]:
    """One unit of work from ``source``: a repository on a new session, closed afterwards
    (``AsyncSession``'s own exit, which finishes closing even when the task is cancelled),
    or the repository ``source`` returns."""
    opened = source()
    if isinstance(opened, AsyncSession):
        async with opened:
            check_keeps_users_readable(
                opened.sync_session.expire_on_commit, "run_unit_of_work_async"
            )
            yield AsyncUserRepository(opened)
        return
    if isinstance(opened, Session):
        raise InvalidUserError(
            "source returned a sync Session: run the work with userstore.run_unit_of_work"
        )
    if not inspect.iscoroutinefunction(check_repository(opened, "source")):
        raise InvalidUserError(
            f"source returned a sync repository ({type(opened).__name__}): "
            "run the work with userstore.run_unit_of_work"
        )
    yield cast(AsyncUserRepositoryProtocol, opened)


async def _undone_on_failure(
    repository: AsyncUserRepositoryProtocol, step: Callable[[], Awaitable[_T]]
) -> _T:
    """Await one step of an attempt; roll the unit of work back if it raises anything.

    After a cancellation too: the cancelled task may still await, and the
    rollback leaves nothing of the work behind (``CancelledError`` is raised
    all the same).
    """
    try:
        return await step()
    except BaseException as error:
        try:
            await repository.rollback()
        except Exception as failure:
            # A rollback that fails leaves nothing committed either; the step's
            # error is the one the app needs to see.
            error.add_note(f"rolling the unit of work back failed too: {failure!r}")
        raise


async def _awaited(result: Awaitable[_T]) -> _T:
    """Await the work's result, refusing one that cannot be awaited (a sync work)."""
    if not inspect.isawaitable(result):
        raise InvalidUserError(
            "work must return an awaitable (be an async function), got "
            f"{type(result).__name__}: run a sync work with userstore.run_unit_of_work"
        )
    return await result
