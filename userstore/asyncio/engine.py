"""Async engines and session factories, configured exactly as the sync ones."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from sqlalchemy import URL
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from userstore.engine import build_engine
from userstore.errors import ConfigurationError
from userstore.routing import (
    DEFAULT_REPLICA_RETRY_AFTER,
    RoutingSession,
    UserStoreSession,
    check_replicas,
)
from userstore.urls import resolve_url


def create_async_engine(
    url: str | URL | None = None,
    *,
    echo: bool = False,
    transaction_pooling: bool = False,
    causal_reads: bool = False,
    **kwargs: Any,
) -> AsyncEngine:
    """Create an async engine that behaves as :func:`~userstore.create_engine`'s engines do.

    The URL is resolved as for the sync engine (explicit, else
    ``USERSTORE_DATABASE_URL``, else the embedded SQLite file), and a URL
    without a driver, or with a sync one, gets its backend's async driver:
    aiosqlite, asyncpg or asyncmy (``postgresql+psycopg_async`` and
    ``mariadb+aiomysql`` are accepted too). Every per-backend setting, the
    SQLite transaction rules and the error translation are the sync engine's.

    Args:
        url: Database URL; defaults to ``USERSTORE_DATABASE_URL``, else
            ``sqlite:///userstore.db``.
        echo: Log every SQL statement through the ``sqlalchemy.engine`` logger.
        transaction_pooling: PostgreSQL only: the URL is PgBouncer's in
            transaction mode; as for :func:`~userstore.create_engine`.
        causal_reads: Every statement sees every write committed anywhere before
            it began (``wsrep_sync_wait = 7`` on a Galera cluster); as for
            :func:`~userstore.create_engine`.
        **kwargs: Passed to :func:`sqlalchemy.ext.asyncio.create_async_engine`;
            they override userstore's settings (``connect_args`` are merged).

    Returns:
        A new ``AsyncEngine``. Nothing connects until it is first used.

    Raises:
        ConfigurationError: the URL is malformed or names an unsupported
            database or driver, or the driver (or greenlet) is not installed,
            or ``transaction_pooling`` is not a bool, or True off PostgreSQL,
            or ``causal_reads`` is not a bool, or a MariaDB URL's ``host=``
            parameter is not ``host`` or ``host:port``.
    """
    resolved = resolve_url(url, flavour="async")
    if importlib.util.find_spec("greenlet") is None:
        raise ConfigurationError(
            "async engines need the greenlet library: pip install 'userstore[asyncio]'"
        )
    return build_engine(
        sa_asyncio.create_async_engine,
        resolved,
        echo=echo,
        options=kwargs,
        transaction_pooling=transaction_pooling,
        causal_reads=causal_reads,
    )


def create_async_session_factory(
    engine: AsyncEngine,
    *,
    replicas: Sequence[AsyncEngine] = (),
    replica_retry_after: float = DEFAULT_REPLICA_RETRY_AFTER,
) -> async_sessionmaker[AsyncSession]:
    """Return the session factory that :class:`~userstore.AsyncUserRepository` expects.

    The same settings as :func:`~userstore.create_session_factory`: autoflush,
    and users are not expired on commit, so a returned user's attributes can
    be read after ``commit()``, a rollback or ``close()`` without touching the
    database (no ``MissingGreenlet``).

    With ``replicas``, reads are routed as :func:`~userstore.create_session_factory`
    routes them (:mod:`userstore.routing`); sessions take ``read_after=<token>``.

    Args:
        engine: An engine from :func:`create_async_engine`: the primary.
        replicas: Engines from :func:`create_async_engine` on replicas of it.
        replica_retry_after: Seconds a replica that could not be reached is
            left alone before it is tried again.

    Raises:
        ConfigurationError: ``engine`` is not an ``AsyncEngine``, or
            ``replicas`` are not async engines of the primary's backend.
    """
    if not isinstance(engine, AsyncEngine):
        raise ConfigurationError(
            f"create_async_session_factory takes an AsyncEngine, got {type(engine).__name__} "
            "(an Engine goes to create_session_factory)"
        )
    for replica in replicas if isinstance(replicas, Sequence) else ():
        if not isinstance(replica, AsyncEngine):
            raise ConfigurationError(
                f"each replica must be an AsyncEngine, got {type(replica).__name__}"
            )
    router = check_replicas(engine.sync_engine, replicas, replica_retry_after, asynchronous=True)
    if not router.replicas:
        return async_sessionmaker(
            bind=engine,
            sync_session_class=UserStoreSession,
            autoflush=True,
            expire_on_commit=False,
        )
    return async_sessionmaker(
        bind=engine,
        sync_session_class=RoutingSession,
        autoflush=True,
        expire_on_commit=False,
        router=router,
    )
