"""Edges of the async twin found by a new user's scripts: each is now a rule with a test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import URL

import userstore
from tests.async_support import async_engine_and_sessions, cancelling_at
from tests.databases import BACKENDS, migrated_database, stored_users, throwaway_database
from userstore import AsyncUserRepository, DatabaseError, User, migrations

_ROWS = [(f"bulk{i:04d}", i) for i in range(300)]
# (verb, the statement the task is cancelled at, which one of them): after the first batch.
_BULK_CANCELS = {
    "add_many": (("SAVEPOINT",), 2),
    "upsert_many": (("INSERT INTO USERS", "WITH UPSERTED"), 2),  # (PostgreSQL's is a CTE)
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("verb", _BULK_CANCELS)
def test_a_bulk_call_cancelled_after_a_batch_leaves_nothing_for_the_next_commit(
    backend: str, verb: str, tmp_path: Path
):
    async def scenario(url: URL) -> None:
        async with async_engine_and_sessions(url) as (engine, factory), factory() as session:
            repo = AsyncUserRepository(session)
            await repo.add(User(name="kept", number=1))
            await repo.commit()
            prefixes, nth = _BULK_CANCELS[verb]
            with cancelling_at(engine, prefixes, nth) as seen:
                call = asyncio.create_task(getattr(repo, verb)(_ROWS, batch_size=100))
                with pytest.raises(asyncio.CancelledError):
                    await call
            assert len(seen) == nth  # cancelled after a whole batch was sent

            assert await repo.count() == 1  # the same session goes on: nothing of the call
            await repo.commit()

    with migrated_database(backend, tmp_path) as url:
        asyncio.run(scenario(url))
        assert stored_users(url) == {"kept": 1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_session_used_by_two_tasks_at_once_is_refused_with_a_userstore_error(
    backend: str, tmp_path: Path
):
    async def scenario(url: URL) -> list[object]:
        async with async_engine_and_sessions(url) as (_engine, factory), factory() as session:
            repo = AsyncUserRepository(session)
            outcomes = await asyncio.gather(repo.get("a"), repo.count(), return_exceptions=True)

            async def read_all() -> None:
                async for _user in repo.iter_all():
                    pass

            streamed = await asyncio.gather(repo.count(), read_all(), return_exceptions=True)
            assert isinstance(streamed[1], DatabaseError)  # iter_all is guarded too
            assert await repo.count() == 0  # and the session works afterwards
            return outcomes

    with migrated_database(backend, tmp_path) as url:
        first, second = asyncio.run(scenario(url))

    assert first is None
    assert isinstance(second, DatabaseError)
    assert "one task at a time" in str(second)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_argument_types_are_userstore_errors(backend: str, tmp_path: Path):
    async def scenario(url: URL) -> None:
        async with async_engine_and_sessions(url) as (engine, factory), factory() as session:
            repo = AsyncUserRepository(session)
            with pytest.raises(userstore.InvalidUserError, match="iterable"):
                await repo.add_many(5)  # type: ignore[arg-type]
            with pytest.raises(userstore.MigrationError, match="revision must be a str"):
                await migrations.upgrade_async(engine, 5)  # type: ignore[arg-type]

    with migrated_database(backend, tmp_path) as url:
        asyncio.run(scenario(url))


@pytest.mark.parametrize("database", ["no_such_database", "postgres"])
def test_postgresql_failures_to_connect_are_the_same_error_in_both_flavours(database: str):
    if "postgresql" not in BACKENDS:
        pytest.skip("postgresql is not under test")
    url = f"postgresql://{'nobody' if database == 'postgres' else 'postgres'}@127.0.0.1/{database}"
    sync_engine = userstore.create_engine(url)

    async def connect_async() -> None:
        engine = userstore.create_async_engine(url)
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    try:
        with pytest.raises(userstore.UserStoreError) as sync_raised, sync_engine.connect():
            pass
    finally:
        sync_engine.dispose()
    with pytest.raises(userstore.UserStoreError) as async_raised:
        asyncio.run(connect_async())

    assert type(sync_raised.value) is type(async_raised.value)
    assert type(async_raised.value) is userstore.DatabaseUnavailableError


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_async_migration_cancelled_midway_ends_with_cancelled_error_and_can_run_again(
    backend: str, tmp_path: Path
):
    async def scenario(url: URL) -> None:
        async with async_engine_and_sessions(url) as (engine, _factory):
            with cancelling_at(engine, ("CREATE TABLE",)) as seen:
                upgrade = asyncio.create_task(migrations.upgrade_async(engine))
                with pytest.raises(asyncio.CancelledError):
                    await upgrade
            assert seen  # it was cancelled midway, at its first CREATE TABLE
            await migrations.upgrade_async(engine)
            await migrations.assert_current_async(engine)

    with throwaway_database(backend, tmp_path) as url:
        asyncio.run(scenario(url))


def test_a_session_factory_refuses_an_engine_of_the_other_flavour(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(userstore.ConfigurationError, match="create_session_factory"):
        userstore.create_async_session_factory(userstore.create_engine(url))  # type: ignore[arg-type]
    with pytest.raises(userstore.ConfigurationError, match="create_async_session_factory"):
        userstore.create_session_factory(userstore.create_async_engine(url))  # type: ignore[arg-type]
