"""Leaving an ``async for`` over ``iter_all`` early releases its cursor at once, quietly.

``iter_all`` reads through a cursor left open between batches (a server-side cursor on
PostgreSQL, SQLite's own stepping) or page by page (MariaDB, whose streaming would keep the
connection busy). A loop left early, inside ``async with repo.iter_all() as users`` or followed
by ``await stream.aclose()``, must give the session its connection back for the very next
statement, leave no cursor open on the server, and neither warn nor log an error, then or when
the stream is collected.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.async_support import AsyncEngineAndSessions, async_engine_and_sessions, checked_out
from tests.databases import BACKENDS, migrated_database
from userstore import AsyncUserRepository, User

USERS = 50
BATCH = 10
READ_BEFORE_LEAVING = 15  # into the second batch: the cursor has rows left to send

Leave = Callable[[AsyncUserRepository, list[str]], Awaitable[None]]


class _LoopBodyError(Exception):
    """An error raised in the body of the loop."""


async def _leave_an_async_with_block(repo: AsyncUserRepository, seen: list[str]) -> None:
    async with repo.iter_all(batch_size=BATCH) as users:
        async for user in users:
            seen.append(user.name)
            if len(seen) == READ_BEFORE_LEAVING:
                break


async def _leave_then_aclose(repo: AsyncUserRepository, seen: list[str]) -> None:
    stream = repo.iter_all(batch_size=BATCH)
    async for user in stream:
        seen.append(user.name)
        if len(seen) == READ_BEFORE_LEAVING:
            break
    await stream.aclose()
    assert [user async for user in stream] == []  # a closed stream yields nothing more


async def _raise_inside_an_async_with_block(repo: AsyncUserRepository, seen: list[str]) -> None:
    async def read() -> None:
        async with repo.iter_all(batch_size=BATCH) as users:
            async for user in users:
                seen.append(user.name)
                if len(seen) == READ_BEFORE_LEAVING:
                    raise _LoopBodyError

    with pytest.raises(_LoopBodyError):
        await read()


LEAVES: dict[str, Leave] = {
    "break inside async with": _leave_an_async_with_block,
    "break, then aclose()": _leave_then_aclose,
    "an error inside async with": _raise_inside_an_async_with_block,
}


def _backends(**bugs: pytest.MarkDecorator) -> list[Any]:
    return [pytest.param(b, marks=bugs[b]) if b in bugs else b for b in BACKENDS]


@contextmanager
def _nothing_reported(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail if the block warns, logs a warning or an error, or drops an unraisable exception.

    The cycle collector runs at the end of the block, so whatever the block left for it to
    finalise (an unclosed stream's generator, a cursor) is finalised here, not in a later test.
    """
    unraisable: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda report: unraisable.append(
        f"{report.exc_value!r} in {report.object!r}"
    )
    caplog.set_level(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
            gc.collect()
    finally:
        sys.unraisablehook = hook
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert [str(w.message) for w in caught] == []
    assert logged == []
    assert unraisable == []


async def _open_portals(session: AsyncSession) -> list[str]:
    """PostgreSQL's cursors (named portals) open in this session's transaction."""
    rows = await session.execute(text("SELECT name FROM pg_cursors WHERE name <> ''"))
    return list(rows.scalars())


@asynccontextmanager
async def _engine_with_users_stored(url: URL) -> AsyncIterator[AsyncEngineAndSessions]:
    """An async engine on ``url``, once it has stored USERS users; disposed when done."""
    async with async_engine_and_sessions(url) as opened:
        async with opened.factory() as session:
            repo = AsyncUserRepository(session)
            await repo.add_many((f"user{i:03d}", i) for i in range(USERS))
            await repo.commit()
        yield opened


async def _assert_session_ready(session: AsyncSession, backend: str) -> None:
    """The very next statements on the session work, and see every user."""
    repo = AsyncUserRepository(session)
    assert await repo.count() == USERS
    assert (await repo.get_one("user049")).number == 49
    assert [u.name for u in await repo.list(after="user047")] == ["user048", "user049"]
    await repo.add(User(name="zz-after", number=None))
    await repo.commit()
    if backend == "postgresql":
        assert await _open_portals(session) == []  # the unit of work's end closes any cursor
    assert len([user async for user in repo.iter_all(batch_size=BATCH)]) == USERS + 1


@pytest.mark.parametrize("leave", LEAVES.values(), ids=LEAVES.keys())
@pytest.mark.parametrize("backend", BACKENDS)
def test_leaving_iter_all_early_releases_its_cursor_for_the_next_statement_at_once(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, leave: Leave
):
    async def scenario(url: URL) -> None:
        async with _engine_with_users_stored(url) as (engine, factory):
            async with factory() as session:
                seen: list[str] = []
                await leave(AsyncUserRepository(session), seen)
                assert seen == [f"user{i:03d}" for i in range(READ_BEFORE_LEAVING)]
                await _assert_session_ready(session, backend)
            assert checked_out(engine) == 0

    with migrated_database(backend, tmp_path) as url, _nothing_reported(caplog):
        asyncio.run(scenario(url))


@pytest.mark.parametrize("backend", _backends())
def test_a_stream_left_without_aclose_is_released_quietly_when_the_unit_of_work_ends(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    # The documented fallback: without async with or aclose(), the cursor goes when the unit
    # of work ends. Nothing may be logged or warned, then or when the stream is collected
    # (here, as soon as the loop is left: nothing else refers to it).
    async def scenario(url: URL) -> None:
        async with _engine_with_users_stored(url) as (engine, factory):
            async with factory() as session:
                repo = AsyncUserRepository(session)
                async for user in repo.iter_all(batch_size=BATCH):
                    if user.name == "user014":
                        break
                await _assert_session_ready(session, backend)
            assert checked_out(engine) == 0

    with migrated_database(backend, tmp_path) as url, _nothing_reported(caplog):
        asyncio.run(scenario(url))


@pytest.mark.parametrize("leave", LEAVES.values(), ids=LEAVES.keys())
def test_on_postgresql_leaving_iter_all_early_closes_its_server_side_cursor_at_once(
    tmp_path: Path, leave: Leave
):
    async def scenario(url: URL) -> None:
        async with _engine_with_users_stored(url) as (_, factory), factory() as session:
            await leave(AsyncUserRepository(session), [])
            assert await _open_portals(session) == []

    with migrated_database("postgresql", tmp_path) as url:
        asyncio.run(scenario(url))
