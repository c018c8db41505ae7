"""How database failures map onto userstore's errors: one table, by class and code.

Each rule names the SQLAlchemy exception class, the backend, and the SQLSTATE
(PostgreSQL, from psycopg's ``sqlstate``), MariaDB error number (PyMySQL's
``args[0]``) or SQLite extended result name (``sqlite_errorname``) that it
matches. Messages are never parsed. A failure no rule matches becomes
:class:`~userstore.errors.TransientDatabaseError` when SQLAlchemy has
invalidated the connection (a lost connection), else
:class:`~userstore.errors.DatabaseError`.

The table is applied in one place: :func:`install_error_translation` puts a
``handle_error`` hook on every userstore engine, so whatever sends SQL through
it (a repository call, a migration, an attribute load, the app's own
statement) raises a :class:`~userstore.errors.UserStoreError`. A unique-key
violation leaves the engine as a plain ``DatabaseError`` (the engine cannot
know whose key it was); the repository, which knows what it staged, turns it
into :class:`~userstore.errors.DuplicateUserError` naming the user.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext

from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DuplicateUserError,
    InvalidUserError,
    TransientDatabaseError,
    UserStoreError,
)


@dataclass(frozen=True)
class ErrorRule:
    """One row of the mapping table."""

    backend: str
    sqlalchemy_class: type[sa_exc.DBAPIError]
    code: str | int
    meaning: str
    maps_to: type[UserStoreError]


_Integrity = sa_exc.IntegrityError
_Operational = sa_exc.OperationalError
_Duplicate = DuplicateUserError
_Transient = TransientDatabaseError
_Unavailable = DatabaseUnavailableError

NO_CODE_WHILE_CONNECTING: Final = "(none, while connecting)"
"""The code of a failure to connect that carries none: psycopg's for a refused
or unreachable server (SQLSTATEs come only from a server that answered)."""

# Every row is triggered for real on its backend by tests/test_error_mapping_live.py.
ERROR_RULES: Final[tuple[ErrorRule, ...]] = (
    ErrorRule("postgresql", _Integrity, "23505", "unique_violation", _Duplicate),
    ErrorRule("postgresql", _Operational, "40001", "serialization_failure", _Transient),
    ErrorRule("postgresql", _Operational, "40P01", "deadlock_detected", _Transient),
    ErrorRule("postgresql", _Operational, "55P03", "lock_not_available (lock_timeout)", _Transient),
    ErrorRule(
        "postgresql", _Operational, "57014", "query_canceled (statement_timeout)", _Transient
    ),
    ErrorRule("postgresql", _Operational, "57P01", "admin_shutdown (backend killed)", _Transient),
    ErrorRule(
        "postgresql",
        _Operational,
        NO_CODE_WHILE_CONNECTING,
        "server unreachable (refused, down, no route)",
        _Unavailable,
    ),
    ErrorRule("mariadb", _Integrity, 1062, "ER_DUP_ENTRY", _Duplicate),
    ErrorRule("mariadb", _Operational, 1205, "ER_LOCK_WAIT_TIMEOUT", _Transient),
    ErrorRule("mariadb", _Operational, 1213, "ER_LOCK_DEADLOCK", _Transient),
    ErrorRule("mariadb", _Operational, 2013, "CR_SERVER_LOST (connection killed)", _Transient),
    ErrorRule(
        "mariadb", _Operational, 2003, "CR_CONN_HOST_ERROR (server unreachable)", _Unavailable
    ),
    ErrorRule("sqlite", _Integrity, "SQLITE_CONSTRAINT_PRIMARYKEY", "primary key", _Duplicate),
    ErrorRule("sqlite", _Operational, "SQLITE_BUSY", "database is locked", _Transient),
    ErrorRule(
        "sqlite",
        _Operational,
        "SQLITE_BUSY_SNAPSHOT",
        "stale snapshot (another writer committed since this unit of work read)",
        _Transient,
    ),
)
"""The table. Two rules follow it for every backend: an error on a connection
SQLAlchemy has invalidated (it recognised a disconnect) and a pool checkout
timeout are transient too; anything else is a plain DatabaseError."""

GALERA_ERROR_RULES: Final[tuple[ErrorRule, ...]] = (
    ErrorRule(
        "mariadb",
        _Operational,
        1047,
        "WSREP has not yet prepared node for application use (a Galera node joining, cut off "
        "from the primary component, rejecting queries, or paused)",
        _Transient,
    ),
)
"""Rows that only a MariaDB Galera node raises, each triggered for real on the
cluster by tests/test_galera_errors.py. A certification conflict is 1213, the
deadlock row above. Galera's refusals of a write set over its limits come with
generic codes and are typed by :mod:`userstore.galera`."""

_RULES_BY_KEY: Final = {
    (rule.backend, rule.code): rule for rule in (*ERROR_RULES, *GALERA_ERROR_RULES)
}


def backend_of(dialect_name: str) -> str:
    """Return the backend label used in :data:`ERROR_RULES` for a dialect name."""
    return "mariadb" if dialect_name == "mysql" else dialect_name


def driver_error_code(error: BaseException | None, backend: str) -> str | int | None:
    """Return the code a backend's driver puts on an error.

    Args:
        error: The driver's exception (``DBAPIError.orig``).
        backend: ``"postgresql"``, ``"mariadb"`` or ``"sqlite"``.

    Returns:
        psycopg's SQLSTATE, PyMySQL's MariaDB error number (not its generic
        SQLSTATE, which lumps many errors together), or sqlite3's extended
        result name; ``None`` when the error carries none.
    """
    if backend == "postgresql":
        code = getattr(error, "sqlstate", None)
    elif backend == "sqlite":
        code = getattr(error, "sqlite_errorname", None)
    else:
        args = getattr(error, "args", ())
        code = args[0] if args else None
    return code if isinstance(code, (str, int)) and not isinstance(code, bool) else None


def rule_for(
    error: sa_exc.DBAPIError, dialect_name: str, *, connecting: bool = False
) -> ErrorRule | None:
    """Return the table row that matches ``error``, if any.

    Args:
        error: The error SQLAlchemy raised.
        dialect_name: ``engine.dialect.name`` of the engine that raised it.
        connecting: Whether it was raised while opening a connection.
    """
    backend = backend_of(dialect_name)
    code = driver_error_code(error.orig, backend)
    if code is None and connecting:
        code = NO_CODE_WHILE_CONNECTING
    rule = None if code is None else _RULES_BY_KEY.get((backend, code))
    # The code decides; the class must agree, unless the driver's errors come
    # through SQLAlchemy unclassified (asyncpg's, as plain DBAPIError).
    if rule is not None and (
        isinstance(error, rule.sqlalchemy_class) or type(error) is sa_exc.DBAPIError
    ):
        return rule
    return None


def classify(
    error: sa_exc.SQLAlchemyError, dialect_name: str, *, connecting: bool = False
) -> type[UserStoreError]:
    """Return the userstore error class a SQLAlchemy error maps to.

    Args:
        error: The error SQLAlchemy raised.
        dialect_name: ``engine.dialect.name`` of the connection that raised it.
        connecting: Whether it was raised while opening a connection.

    Returns:
        :class:`DuplicateUserError`, :class:`DatabaseUnavailableError`,
        :class:`TransientDatabaseError` or :class:`DatabaseError`.
    """
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free in time
        return TransientDatabaseError
    if not isinstance(error, sa_exc.DBAPIError):
        return DatabaseError
    if connecting and backend_of(dialect_name) == "postgresql":
        # psycopg gives no code for any failure to connect (a wrong password,
        # a missing database too); asyncpg does, but both flavours must agree.
        return DatabaseUnavailableError
    rule = rule_for(error, dialect_name, connecting=connecting)
    if rule is not None:
        return rule.maps_to
    if error.connection_invalidated:
        return TransientDatabaseError
    return DatabaseError


def translate(
    error: sa_exc.SQLAlchemyError, dialect_name: str, *, connecting: bool = False
) -> DatabaseError:
    """Return the :class:`DatabaseError` (or subclass) to raise for a SQLAlchemy error.

    A unique-key violation becomes a plain ``DatabaseError`` whose ``code``
    says so (:func:`is_unique_violation`); naming the user is the
    repository's part.
    """
    error_class = classify(error, dialect_name, connecting=connecting)
    if not issubclass(error_class, DatabaseError):
        error_class = DatabaseError
    orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    backend = backend_of(dialect_name)
    code = driver_error_code(orig, backend) if isinstance(error, sa_exc.DBAPIError) else None
    doing = "connecting to" if connecting else "on"
    detail = " ".join(str(orig).split())  # one line, whatever the driver wrote
    return error_class(
        f"{type(orig).__name__} {doing} {backend}: {detail}",
        code=code,
        backend=backend,
    )


def is_unique_violation(error: DatabaseError) -> bool:
    """Whether a translated error is a unique-key violation (a duplicate name, on users)."""
    if error.backend is None or error.code is None:
        return False
    rule = _RULES_BY_KEY.get((error.backend, error.code))
    return rule is not None and rule.maps_to is DuplicateUserError


NEEDS_ROLLBACK: Final = "userstore.needs_rollback"
"""Key set in a pooled connection's ``info`` when a statement on it failed."""


_TRANSLATING: Final[weakref.WeakSet[Engine]] = weakref.WeakSet()


def translates_errors(engine: Engine) -> bool:
    """Whether ``engine``'s failures are translated (an engine from userstore's factories)."""
    return engine in _TRANSLATING


def install_error_translation(engine: Engine) -> None:
    """Make every database failure raised through ``engine`` a :class:`UserStoreError`.

    A ``handle_error`` hook, the one place where the table applies. SQLAlchemy
    still does its own work first (a lost connection is invalidated and the
    pool refreshed); the translated error is raised in place of SQLAlchemy's,
    with the driver's exception as its cause. Pre-ping failures are left to
    SQLAlchemy, which reconnects unseen.
    """

    _TRANSLATING.add(engine)

    @event.listens_for(engine, "handle_error")
    def _translate(context: ExceptionContext) -> BaseException | None:
        sa_error = context.sqlalchemy_exception
        if context.is_pre_ping or sa_error is None or _expected_by_sqlalchemy(context):
            return None
        if not isinstance(sa_error, sa_exc.DBAPIError):
            # Raised before the driver saw the statement: a value that could
            # not be bound (a naive datetime, say) is bad input.
            orig = context.original_exception
            if isinstance(orig, (ValueError, TypeError)):
                return InvalidUserError(str(orig))
            return DatabaseError(f"{type(orig).__name__}: {orig}")
        connection = context.connection
        if not context.is_disconnect and _driver_connection_is_wedged(context.original_exception):
            # Its connection is lost to the driver: drop it, and the failure is transient.
            context.is_disconnect = True
            sa_error.connection_invalidated = True
        if connection is not None and not context.is_disconnect and not connection.invalidated:
            # The driver's view of the transaction may be stale after an
            # error reply; the pool's reset must not trust it.
            connection.info[NEEDS_ROLLBACK] = True
        if (
            connection is None
            and isinstance(sa_error, sa_exc.ProgrammingError)
            and driver_error_code(sa_error.orig, backend_of(context.dialect.name)) is None
        ):
            # The driver refused its connection options (psycopg: "invalid
            # connection option") before reaching any server. (A server's
            # error while connecting carries its code, and is the server's.)
            return ConfigurationError(
                f"the {context.dialect.driver} driver refused the connection options: "
                f"{' '.join(str(context.original_exception).split())}"
            )
        return translate(sa_error, context.dialect.name, connecting=connection is None)


# asyncpg, after its connection died in the middle of an operation (a COPY
# whose server was killed), refuses every later use with an InterfaceError
# that has no code: the connection can only be thrown away.
_WEDGED_ASYNCPG_CONNECTION: Final = (
    "another operation is in progress",
    "cannot use Connection.transaction() in a manually started transaction",
)


def _driver_connection_is_wedged(orig: BaseException) -> bool:
    message = str(orig)
    return type(orig).__name__ == "InterfaceError" and any(
        text in message for text in _WEDGED_ASYNCPG_CONNECTION
    )


def _expected_by_sqlalchemy(context: ExceptionContext) -> bool:
    """Whether SQLAlchemy itself catches this error (a dialect probing, e.g. has_table).

    Dialects mark such statements ``skip_user_error_events``; SQLAlchemy
    honours the mark only on the connection's options, not the statement's.
    """
    execution = context.execution_context
    return execution is not None and bool(
        execution.execution_options.get("skip_user_error_events", False)
    )
