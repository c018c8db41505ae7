"""Engines that make SQLite, PostgreSQL and MariaDB behave alike, and the session factory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar, cast

import sqlalchemy
from sqlalchemy import URL, Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from userstore import galera, pooling, sqlite
from userstore.db_errors import NEEDS_ROLLBACK, backend_of, install_error_translation, translate
from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    UserStoreError,
)
from userstore.models import MARIADB_CHARSET
from userstore.routing import (
    DEFAULT_REPLICA_RETRY_AFTER,
    RoutingSession,
    UserStoreSession,
    check_replicas,
)
from userstore.sqlite import write_intent
from userstore.urls import (
    DATABASE_URL_VARIABLE,
    DEFAULT_DATABASE_URL,
    DRIVER_EXTRAS,
    resolve_url,
)

__all__ = [
    "DATABASE_URL_VARIABLE",
    "DEFAULT_DATABASE_URL",
    "create_engine",
    "create_session_factory",
    "resolve_url",
    "write_intent",
]

# Strict mode makes MariaDB reject what PostgreSQL rejects instead of
# truncating or coercing it; UTC keeps server-side timestamps comparable.
MARIADB_SESSION_SETUP: Final = "SET SESSION sql_mode = 'TRADITIONAL', time_zone = '+00:00'"


def create_engine(
    url: str | URL | None = None,
    *,
    echo: bool = False,
    transaction_pooling: bool = False,
    causal_reads: bool = False,
    **kwargs: Any,
) -> Engine:
    """Create an engine configured so every backend behaves like the others.

    SQLite gets a busy timeout, WAL journaling for file databases, deferred
    transactions that never block readers (see :mod:`userstore.sqlite`), and
    for an in-memory database one connection that sessions take in turn.
    MariaDB gets utf8mb4, strict SQL mode, UTC and READ COMMITTED on every
    connection. Server backends get pool pre-ping. On every backend, a
    database failure raised through the engine is a
    :class:`~userstore.errors.UserStoreError` (see :mod:`userstore.db_errors`).

    Args:
        url: Database URL; defaults to ``USERSTORE_DATABASE_URL``, else
            ``sqlite:///userstore.db``.
        echo: Log every SQL statement through the ``sqlalchemy.engine`` logger.
        transaction_pooling: PostgreSQL only: the URL is PgBouncer's (or another
            pooler's) in transaction mode, where each transaction may run on
            another server connection; the driver then keeps no prepared
            statement beyond a transaction (see :mod:`userstore.pooling`).
        causal_reads: Every statement sees every write committed anywhere
            before it began. On a MariaDB Galera cluster, where a node may not
            yet have applied what another node committed, each connection sets
            ``wsrep_sync_wait = 7`` (see :mod:`userstore.galera`). One
            PostgreSQL, MariaDB or SQLite server is always causal: there it
            changes nothing.
        **kwargs: Passed to :func:`sqlalchemy.create_engine`; they override
            the settings above (``connect_args`` are merged).
            ``isolation_level="AUTOCOMMIT"`` is honoured on SQLite too.

    Returns:
        A new engine. Nothing connects until it is first used.

    Raises:
        ConfigurationError: the URL is malformed or names an unsupported
            database or driver, or the driver is not installed, or
            ``transaction_pooling`` is not a bool, or True off PostgreSQL, or
            ``causal_reads`` is not a bool, or a MariaDB URL's ``host=``
            parameter is not ``host`` or ``host:port``.
    """
    return build_engine(
        sqlalchemy.create_engine,
        resolve_url(url),
        echo=echo,
        options=kwargs,
        transaction_pooling=transaction_pooling,
        causal_reads=causal_reads,
    )


_E = TypeVar("_E")


def build_engine(
    factory: Callable[..., _E],
    resolved: URL,
    *,
    echo: bool,
    options: dict[str, Any],
    transaction_pooling: bool = False,
    causal_reads: bool = False,
) -> _E:
    """Build a sync or async engine with the settings :func:`create_engine` describes.

    Args:
        factory: ``sqlalchemy.create_engine`` or ``sqlalchemy.ext.asyncio.create_async_engine``.
        resolved: The URL from :func:`resolve_url`, of the factory's flavour.
        echo: Log every SQL statement.
        options: The caller's keyword arguments; they override ours.
        transaction_pooling: Make the driver safe behind PgBouncer's
            transaction pooling (:func:`userstore.pooling.configure`).
        causal_reads: Make reads wait for the cluster on Galera (:mod:`userstore.galera`).
    """
    kwargs = dict(options)
    backend = resolved.get_backend_name()
    asynchronous = resolved.get_dialect().is_async
    _check_isolation_level(backend, kwargs.get("isolation_level"))
    causal_reads = galera.check_causal_reads(causal_reads)
    connect_args: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    if backend == "sqlite":
        sqlite.engine_options(resolved, connect_args, settings, asynchronous=asynchronous)
        if "isolation_level" in kwargs:
            # SQLite's dialect applies it below our BEGIN; as an execution
            # option our begin hook sees it (and skips BEGIN for AUTOCOMMIT).
            level = kwargs.pop("isolation_level")
            kwargs["execution_options"] = {
                **kwargs.get("execution_options", {}),
                "isolation_level": level,
            }
    else:
        settings["pool_pre_ping"] = True
    if backend in ("mysql", "mariadb"):
        connect_args["charset"] = MARIADB_CHARSET
        connect_args["init_command"] = MARIADB_SESSION_SETUP + (
            f", {galera.CAUSAL_READS_SETUP}" if causal_reads else ""
        )
        hosts = galera.hosts_of(resolved)  # (checked before anything connects)
        settings["isolation_level"] = "READ COMMITTED"
        # Replaced by _configure_mariadb's reset: it skips the ROLLBACK the
        # pool would otherwise send after every commit.
        settings["pool_reset_on_return"] = None
    pooling.configure(resolved, connect_args, transaction_pooling)
    resolved = pooling.prepare_threshold_from_url(resolved, connect_args)
    connect_args.update(kwargs.pop("connect_args", {}))
    pooling.check_not_undone(resolved, connect_args, transaction_pooling)
    settings.update(kwargs)
    try:
        engine = factory(resolved, echo=echo, connect_args=connect_args, **settings)
    except ImportError as exc:
        driver = resolved.get_driver_name()
        extra = DRIVER_EXTRAS.get(driver)
        hint = f": pip install 'userstore[{extra}]'" if extra else ""
        raise ConfigurationError(
            f"the {driver} driver for {backend} is not installed{hint} ({exc})"
        ) from None
    except (sa_exc.ArgumentError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"cannot create an engine with these options: {exc}") from None
    sync_engine: Engine = getattr(engine, "sync_engine", None) or cast(Engine, engine)
    install_error_translation(sync_engine)
    if backend in ("mysql", "mariadb"):
        # (First: do_connect listeners run in the order they were added.)
        galera.configure(sync_engine, hosts)
    _refuse_unknown_connect_options(sync_engine)
    _type_setup_failures(sync_engine)
    if backend == "sqlite":
        sqlite.configure(sync_engine, resolved)
    elif backend in ("mysql", "mariadb") and settings["pool_reset_on_return"] is None:
        _configure_mariadb(sync_engine)
    return engine


_ISOLATION_LEVELS: Final = {
    "sqlite": frozenset({"SERIALIZABLE", "READ UNCOMMITTED", "AUTOCOMMIT"}),
    "server": frozenset(
        {"READ COMMITTED", "READ UNCOMMITTED", "REPEATABLE READ", "SERIALIZABLE", "AUTOCOMMIT"}
    ),
}


def _check_isolation_level(backend: str, level: object) -> None:
    """Refuse an isolation level the backend does not have, before anything connects."""
    if level is None:
        return
    known = _ISOLATION_LEVELS["sqlite" if backend == "sqlite" else "server"]
    if level not in known:
        raise ConfigurationError(
            f"isolation_level must be one of {', '.join(sorted(known))} on {backend}, got {level!r}"
        )


def _refuse_unknown_connect_options(engine: Engine) -> None:
    """Turn a driver's refusal of a connect option (a stray URL query parameter) into ours.

    Also a driver's bare ``OSError`` while connecting (asyncpg raises the
    socket's own, which SQLAlchemy passes through unwrapped) becomes
    :class:`~userstore.errors.DatabaseUnavailableError`, as the other
    drivers' refused connections do through the error table.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(
        dialect: sqlalchemy.Dialect, _record: object, cargs: Any, cparams: Any
    ) -> DBAPIConnection:
        try:
            return dialect.connect(*cargs, **cparams)
        except OSError as exc:
            raise DatabaseUnavailableError(
                f"{type(exc).__name__} connecting to {backend_of(dialect.name)}: {exc}",
                backend=backend_of(dialect.name),
            ) from exc
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"the {dialect.driver} driver does not take these connection options "
                f"(from the URL's query or connect_args): {exc}"
            ) from None


def _type_setup_failures(engine: Engine) -> None:
    """Make a failure while SQLAlchemy sets up an engine's first connection a UserStoreError.

    ``dialect.initialize`` runs its queries on a connection SQLAlchemy has
    not handed out yet. A driver's error there reaches the ``handle_error``
    hook as any failure to connect does; SQLAlchemy's own wrapping of one is
    translated here, and anything else (a dialect left half set up by an
    earlier failed attempt compares a version of None) is a
    :class:`~userstore.errors.DatabaseError`. SQLAlchemy tries the set-up
    again on the next connection.
    """
    dialect = engine.dialect
    initialize = dialect.initialize
    backend = backend_of(dialect.name)

    def initialize_typed(connection: sqlalchemy.Connection) -> None:
        try:
            initialize(connection)
        except (UserStoreError, dialect.loaded_dbapi.Error):
            raise  # ours already, or the driver's: the handle_error hook translates it
        except sa_exc.DBAPIError as exc:
            raise translate(exc, dialect.name, connecting=True) from exc
        except Exception as exc:
            raise DatabaseError(
                f"{type(exc).__name__} while setting up a new {backend} connection: {exc}",
                backend=backend,
            ) from exc

    dialect.initialize = initialize_typed  # type: ignore[method-assign]


def create_session_factory(
    engine: Engine,
    *,
    replicas: Sequence[Engine] = (),
    replica_retry_after: float = DEFAULT_REPLICA_RETRY_AFTER,
) -> sessionmaker[Session]:
    """Return the session factory that :class:`~userstore.UserRepository` expects.

    Sessions autoflush before queries. Users are not expired on commit: a
    user the repository returned stays readable after ``commit()`` and after
    its session is closed (serialize it, return it from a handler), and no
    attribute read ever goes to the database. Reads through the repository
    (``get``, ``list``, ``iter_all``) always ask the database, so they see
    what other units of work committed.

    With ``replicas``, reads go to a replica that has replayed everything
    the factory's sessions committed, and everything else to ``engine``, the
    primary (see :mod:`userstore.routing`). Every session takes
    ``read_after=<token>`` (a token from
    :meth:`~userstore.UserRepository.read_token`, e.g. of another process):
    its reads then see at least what that token's writer had committed.

    Args:
        engine: An engine from :func:`create_engine`: the primary.
        replicas: Engines from :func:`create_engine` on hot standbys /
            replicas of that primary.
        replica_retry_after: Seconds a replica that could not be reached is
            left alone before it is tried again.

    Returns:
        A ``sessionmaker`` bound to ``engine``.

    Raises:
        ConfigurationError: ``engine`` is not an ``Engine``, or ``replicas``
            are not engines of the primary's backend (SQLite has none).
    """
    if not isinstance(engine, Engine):
        raise ConfigurationError(
            f"create_session_factory takes an Engine, got {type(engine).__name__} "
            "(an AsyncEngine goes to create_async_session_factory)"
        )
    router = check_replicas(engine, replicas, replica_retry_after)
    if not router.replicas:
        return sessionmaker(
            bind=engine, class_=UserStoreSession, autoflush=True, expire_on_commit=False
        )
    return sessionmaker(
        bind=engine, class_=RoutingSession, autoflush=True, expire_on_commit=False, router=router
    )


_ENDED_CLEANLY: Final = "userstore.transaction_ended_cleanly"


def _configure_mariadb(engine: Engine) -> None:
    """Skip the pool's ROLLBACK after a clean commit, and only then.

    A connection given back to the pool is rolled back unless SQLAlchemy saw
    its last transaction end (commit or rollback) with no statement failing
    since. That saves a round trip per unit of work, and never trusts the
    driver's view of the server's transaction flag: an error reply carries no
    flag, so after a failed statement that flag is stale, and the locks the
    statement took (a duplicate-key check locks the existing row) would stay
    held in the pool. Raw DBAPI use is never trusted either.
    """

    def unclean(dbapi_connection: object, record: ConnectionPoolEntry, *_: object) -> None:
        record.info[_ENDED_CLEANLY] = False

    # (An invalidated connection has no pooled record to mark: reading its
    # info would raise, or check out a new connection just to set a flag.)
    def began(connection: sqlalchemy.Connection) -> None:
        if not connection.invalidated:
            connection.info[_ENDED_CLEANLY] = False

    def ended(connection: sqlalchemy.Connection) -> None:
        if not connection.invalidated:
            connection.info[_ENDED_CLEANLY] = True

    event.listen(engine, "checkout", unclean)
    event.listen(engine, "begin", began)
    event.listen(engine, "commit", ended)
    event.listen(engine, "rollback", ended)

    @event.listens_for(engine, "reset")
    def _on_reset(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _state: object
    ) -> None:
        failed = record.info.pop(NEEDS_ROLLBACK, False)
        if failed or not record.info.pop(_ENDED_CLEANLY, False):
            dbapi_connection.rollback()
