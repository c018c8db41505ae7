"""Migrations from an async app: the same revisions, version table and lock, no sync driver."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import URL

import userstore
from tests.databases import BACKENDS, throwaway_database
from userstore import SchemaOutOfDateError, migrations


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_async_migrates_to_head_and_the_sync_path_agrees(backend: str, tmp_path: Path):
    async def migrate(url: URL) -> tuple[str | None, str | None]:
        engine = userstore.create_async_engine(url)
        try:
            before = await migrations.current_async(engine)
            with pytest.raises(SchemaOutOfDateError):
                await migrations.assert_current_async(engine)
            await migrations.upgrade_async(engine)
            await migrations.assert_current_async(engine)
            await migrations.check_async(engine)
            await migrations.upgrade_async(url)  # a URL works too; nothing left to do
            return before, await migrations.current_async(url)
        finally:
            await engine.dispose()

    with throwaway_database(backend, tmp_path) as url:
        before, after = asyncio.run(migrate(url))

        assert (before, after) == (None, migrations.head())
        assert migrations.current(url) == migrations.head()  # the same version table


@pytest.mark.parametrize("backend", BACKENDS)
def test_four_async_upgrades_at_once_all_succeed_and_end_at_head(backend: str, tmp_path: Path):
    async def upgrade_four(url: URL) -> None:
        engines = [userstore.create_async_engine(url) for _ in range(4)]
        try:
            await asyncio.gather(*(migrations.upgrade_async(engine) for engine in engines))
        finally:
            for engine in engines:
                await engine.dispose()

    with throwaway_database(backend, tmp_path) as url:
        asyncio.run(upgrade_four(url))

        assert migrations.current(url) == migrations.head()


_WITHOUT_SYNC_DRIVERS = """
import asyncio, sys
sys.modules["psycopg"] = sys.modules["pymysql"] = None  # as if they were not installed
from userstore import migrations
asyncio.run(migrations.upgrade_async(sys.argv[1]))
print(asyncio.run(migrations.current_async(sys.argv[1])))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_async_app_migrates_with_no_sync_driver_installed(backend: str, tmp_path: Path):
    with throwaway_database(backend, tmp_path) as url:
        done = subprocess.run(
            [sys.executable, "-c", _WITHOUT_SYNC_DRIVERS, url.render_as_string(False)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == migrations.head()


def test_an_unreachable_server_fails_async_migrations_with_a_userstore_error():
    url = "postgresql://postgres@127.0.0.1:1/test"
    with pytest.raises(userstore.DatabaseUnavailableError):
        asyncio.run(migrations.upgrade_async(url))
