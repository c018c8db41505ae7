"""Fixtures for userapp's tests, on userstore.testing's throwaway database and fake.

The plugin makes the database (``--userstore-url`` / ``USERSTORE_TEST_DATABASE_URL``,
else a SQLite file) and migrates userstore's schema; :func:`app_database` then
applies the app's own history on top, once per run. API tests get an httpx
client whose app takes its sessions from ``async_user_session_factory``: all of
a test's requests share one transaction, rolled back after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from userstore.testing import InMemoryUserStore

from userapp import create_app
from userapp.dependencies import get_session_factory, get_user_source
from userapp.schema import ALEMBIC_INI

pytest_plugins = ["userstore.testing"]

Query = Callable[..., Awaitable[list[tuple[Any, ...]]]]


@pytest.fixture(scope="session")
def app_database(userstore_engine: Engine) -> Engine:
    """The run's database with the app's migrations applied after userstore's (done once)."""
    config = Config(ALEMBIC_INI)
    config.attributes["connection"] = userstore_engine
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")
    return userstore_engine


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://userapp.test")


@pytest.fixture
async def client(
    app_database: Engine, async_user_session_factory: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the test database; everything its requests write is rolled back after."""
    app = create_app()
    app.dependency_overrides[get_session_factory] = lambda: async_user_session_factory
    async with _client(app) as client:
        yield client


@pytest.fixture
def stored(async_user_session_factory: async_sessionmaker[AsyncSession]) -> Query:
    """Run plain SQL in the test's transaction: what the app wrote, not what it says it wrote."""

    async def query(sql: str, **parameters: object) -> list[tuple[Any, ...]]:
        async with async_user_session_factory() as session:
            result = await session.execute(text(sql), parameters)
            return [tuple(row) for row in result]

    return query


@pytest.fixture
def store() -> InMemoryUserStore:
    """An in-memory userstore: one fake database for one test."""
    return InMemoryUserStore()


@pytest.fixture
def fake_app(store: InMemoryUserStore) -> Iterator[FastAPI]:
    """The app with its user endpoints on the in-memory fake (no database at all)."""
    app = create_app()
    app.dependency_overrides[get_user_source] = lambda: store.async_repository
    yield app
    app.dependency_overrides.clear()


@pytest.fixture
async def fake_client(fake_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of :func:`fake_app`."""
    async with _client(fake_app) as client:
        yield client
