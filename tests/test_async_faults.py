"""A server connection killed under one task of an async app: the other tasks never notice.

tests/test_faults.py runs the killed-connection scenarios (an idle pooled connection replaced
unseen; one killed mid-transaction failing that unit of work once with
``TransientDatabaseError``) on both flavours, sync and async. What only an async app has is
several tasks' units of work in flight on one loop at once: killing the connection under one
of them fails that one's commit once, and leaves the others' units of work alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncSession

from tests.async_support import async_engine_and_sessions
from tests.databases import connection_id, kill_connections, migrated_database, stored_users
from userstore import AsyncUserRepository, TransientDatabaseError, User

SERVERS = ["postgresql", "mariadb"]


async def _own_server_id(session: AsyncSession, backend: str) -> int:
    """The server's id for the connection this session's transaction holds."""
    return await (await session.connection()).run_sync(connection_id, backend)


@pytest.mark.parametrize("backend", SERVERS)
def test_a_connection_killed_under_one_task_leaves_the_other_tasks_units_of_work_alone(
    backend: str, tmp_path: Path
):
    async def scenario(url: URL) -> None:
        async with (
            async_engine_and_sessions(url) as (_, factory),
            factory() as victim_session,
            factory() as other_session,
        ):
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

    with migrated_database(backend, tmp_path) as url:
        asyncio.run(scenario(url))
        assert stored_users(url) == {"victim": 1, "other": 2}
