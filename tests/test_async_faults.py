"""Killed server connections under an async app: nothing lost, each unit of work fails at most once.

The async twin of tests/test_faults.py's connection tests: an idle pooled connection killed by
the server (an operator, a failover, a crash) is replaced unseen, and one killed in the middle
of a unit of work fails that unit of work once with ``TransientDatabaseError``, after which the
very next call works with no ``rollback()``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncSession

import userstore
from tests.databases import kill_connections, migrated_database
from userstore import AsyncUserRepository, TransientDatabaseError, User

SERVERS = ["postgresql", "mariadb"]

_OTHER_CONNECTIONS = {
    "postgresql": "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    "mariadb": "SELECT id FROM information_schema.processlist "
    "WHERE db = DATABASE() AND id <> CONNECTION_ID()",
}


def _server_ids(url: URL, backend: str) -> set[int]:
    """Server-side ids of every connection to this database but the asking one."""
    admin = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with admin.connect() as connection:
            return set(connection.execute(text(_OTHER_CONNECTIONS[backend])).scalars())
    finally:
        admin.dispose()


def _stored(url: URL) -> dict[str, int | None]:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT name, number FROM users"))
            return {row.name: row.number for row in rows}
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", SERVERS)
def test_a_killed_idle_pooled_connection_is_invisible_to_an_async_caller(
    backend: str, tmp_path: Path
):
    async def scenario(url: URL) -> None:
        engine = userstore.create_async_engine(url)
        try:
            factory = userstore.create_async_session_factory(engine)
            async with factory() as session:
                repo = AsyncUserRepository(session)
                await repo.add(User(name="Jenny", number=1))
                await repo.commit()
            pooled = _server_ids(url, backend)  # the session's connection, back in the pool
            assert len(pooled) == 1

            kill_connections(url, backend, pooled)

            async with factory() as session:
                assert (await AsyncUserRepository(session).get_one("Jenny")).number == 1
            assert engine.sync_engine.pool.checkedout() == 0
        finally:
            await engine.dispose()

    with migrated_database(backend, tmp_path) as url:
        asyncio.run(scenario(url))


@pytest.mark.parametrize("backend", SERVERS)
def test_a_connection_killed_mid_transaction_fails_that_async_unit_of_work_once(
    backend: str, tmp_path: Path
):
    async def scenario(url: URL) -> None:
        engine = userstore.create_async_engine(url)
        try:
            factory = userstore.create_async_session_factory(engine)
            async with factory() as session:
                repo = AsyncUserRepository(session)
                await repo.add(User(name="committed", number=1))
                await repo.commit()
                await repo.add(User(name="in-flight", number=2))
                await repo.count()  # the INSERT is sent; the transaction stays open
                kill_connections(url, backend, _server_ids(url, backend))

                with pytest.raises(TransientDatabaseError):
                    await repo.commit()

                assert await repo.get("in-flight") is None  # the next call just works
                assert (await repo.get_one("committed")).number == 1
                await repo.add(User(name="retried", number=2))
                await repo.commit()
                assert await repo.count() == 2
            assert engine.sync_engine.pool.checkedout() == 0
        finally:
            await engine.dispose()

    with migrated_database(backend, tmp_path) as url:
        asyncio.run(scenario(url))
        assert _stored(url) == {"committed": 1, "retried": 2}


@pytest.mark.parametrize("backend", SERVERS)
def test_a_connection_killed_under_one_task_leaves_the_other_tasks_units_of_work_alone(
    backend: str, tmp_path: Path
):
    async def scenario(url: URL) -> None:
        engine = userstore.create_async_engine(url)
        try:
            factory = userstore.create_async_session_factory(engine)
            async with factory() as victim_session, factory() as other_session:
                victim = AsyncUserRepository(victim_session)
                other = AsyncUserRepository(other_session)
                await victim.add(User(name="victim", number=1))
                await victim.count()  # each holds a connection of its own, mid-transaction
                await other.add(User(name="other", number=2))
                await other.count()
                victim_id = await _own_server_id(victim_session, backend)
                kill_connections(url, backend, {victim_id})

                victim_commit, other_commit = await asyncio.gather(
                    victim.commit(), other.commit(), return_exceptions=True
                )

                assert isinstance(victim_commit, TransientDatabaseError)
                assert other_commit is None
                await victim.add(User(name="victim", number=1))  # the retry
                await victim.commit()
        finally:
            await engine.dispose()

    with migrated_database(backend, tmp_path) as url:
        asyncio.run(scenario(url))
        assert _stored(url) == {"victim": 1, "other": 2}


async def _own_server_id(session: AsyncSession, backend: str) -> int:
    """The server's id for the connection this session's transaction holds."""
    query = {"postgresql": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}
    return int((await session.execute(text(query[backend]))).scalar_one())
