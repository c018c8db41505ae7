"""How database failures map onto userstore's errors: one table, by class and code.

Each rule names the SQLAlchemy exception class, the backend, and the SQLSTATE
(PostgreSQL, from psycopg's ``sqlstate``), MariaDB error number (PyMySQL's
``args[0]``) or SQLite extended result name (``sqlite_errorname``) that it
matches. Messages are never parsed. A failure no rule matches becomes
:class:`~userstore.errors.TransientDatabaseError` when SQLAlchemy has
invalidated the connection (a lost connection), else
:class:`~userstore.errors.DatabaseError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import exc as sa_exc

from userstore.errors import (
    DatabaseError,
    DuplicateUserError,
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
    ErrorRule("mariadb", _Integrity, 1062, "ER_DUP_ENTRY", _Duplicate),
    ErrorRule("mariadb", _Operational, 1205, "ER_LOCK_WAIT_TIMEOUT", _Transient),
    ErrorRule("mariadb", _Operational, 1213, "ER_LOCK_DEADLOCK", _Transient),
    ErrorRule("mariadb", _Operational, 2013, "CR_SERVER_LOST (connection killed)", _Transient),
    ErrorRule("sqlite", _Integrity, "SQLITE_CONSTRAINT_PRIMARYKEY", "primary key", _Duplicate),
    ErrorRule("sqlite", _Operational, "SQLITE_BUSY", "database is locked", _Transient),
)
"""The table. Two rules follow it for every backend: an error on a connection
SQLAlchemy has invalidated (it recognised a disconnect) and a pool checkout
timeout are transient too; anything else is a plain DatabaseError."""

_RULES_BY_KEY: Final = {(rule.backend, rule.code): rule for rule in ERROR_RULES}


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


def rule_for(error: sa_exc.DBAPIError, dialect_name: str) -> ErrorRule | None:
    """Return the table row that matches ``error``, if any."""
    backend = backend_of(dialect_name)
    code = driver_error_code(error.orig, backend)
    rule = None if code is None else _RULES_BY_KEY.get((backend, code))
    if rule is not None and isinstance(error, rule.sqlalchemy_class):
        return rule
    return None


def classify(error: sa_exc.SQLAlchemyError, dialect_name: str) -> type[UserStoreError]:
    """Return the userstore error class a SQLAlchemy error maps to.

    Args:
        error: The error SQLAlchemy raised.
        dialect_name: ``engine.dialect.name`` of the connection that raised it.

    Returns:
        :class:`DuplicateUserError`, :class:`TransientDatabaseError` or
        :class:`DatabaseError`.
    """
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free in time
        return TransientDatabaseError
    if not isinstance(error, sa_exc.DBAPIError):
        return DatabaseError
    rule = rule_for(error, dialect_name)
    if rule is not None:
        return rule.maps_to
    if error.connection_invalidated:
        return TransientDatabaseError
    return DatabaseError
