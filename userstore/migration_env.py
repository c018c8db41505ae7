"""What ``alembic/env.py`` needs from userstore, shared by every entry point.

Whether migrations run from the ``alembic`` command, from
:mod:`userstore.migrations` or from an app's own ``alembic.ini``, they use
userstore's own version table, leave other tables alone, and take the same
lock, so concurrent upgrades serialize.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Column, Connection, text
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator, TypeEngine

from userstore import galera
from userstore.engine import resolve_url
from userstore.errors import TransientDatabaseError
from userstore.models import Base

VERSION_TABLE: Final = "userstore_alembic_version"
# pg_advisory_xact_lock key: "userstor" as a big-endian 63-bit integer.
POSTGRESQL_LOCK_KEY: Final = int.from_bytes(b"userstor", "big") >> 1
MARIADB_LOCK_TIMEOUT_SECONDS: Final = 600


def migration_url(config: Config) -> URL:
    """The database to migrate: ``sqlalchemy.url`` if the ini sets one, else userstore's default."""
    return resolve_url(config.get_main_option("sqlalchemy.url") or None)


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Let autogenerate see only userstore's tables, never an app's own.

    (Nor the migration lock's table on Galera, which no revision creates.)
    """
    if type_ == "table":
        return name in Base.metadata.tables
    return True


def compare_type(
    context: MigrationContext,
    _inspected_column: Column[Any],
    _metadata_column: Column[Any],
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool | None:
    """Also compare MariaDB's fractional-second precision, which Alembic skips.

    Returns:
        True when the precision differs; ``None`` to let Alembic compare the rest.
    """
    dialect = context.dialect
    if dialect.name in ("mysql", "mariadb") and isinstance(metadata_type, TypeDecorator):
        expected = metadata_type.load_dialect_impl(dialect)
        if isinstance(expected, mysql.DATETIME):
            return getattr(inspected_type, "fsp", None) != expected.fsp
    return None


def configure_options(dialect_name: str) -> dict[str, Any]:
    """Options for ``context.configure`` on the given backend.

    SQLite runs every revision in one transaction (our engine's BEGIN
    IMMEDIATE, asked for by env.py, makes its DDL transactional) and alters tables in batch mode.
    MariaDB cannot roll DDL back, so each revision commits on its own.
    """
    return {
        "version_table": VERSION_TABLE,
        "include_name": include_name,
        "compare_type": compare_type,
        "compare_server_default": True,
        "render_as_batch": dialect_name == "sqlite",
        "transactional_ddl": True if dialect_name == "sqlite" else None,
        "transaction_per_migration": dialect_name in ("mysql", "mariadb"),
    }


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Hold the lock that lets one process migrate while others wait.

    PostgreSQL: a transaction-level advisory lock, released when the
    migration transaction ends. MariaDB: ``GET_LOCK`` on a name per
    database, released afterwards (or when the session dies). A Galera node
    (``wsrep_on``), whose ``GET_LOCK`` would hold on that node alone: a row
    of ``userstore_migration_lock``, held cluster-wide with a lease (see
    :func:`userstore.galera.cluster_migration_lock`). SQLite: the
    write lock that the migration's ``BEGIN IMMEDIATE`` already holds (env.py
    begins it under :func:`userstore.engine.write_intent`).
    Whoever waited then reads the version table anew and finds nothing to do.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRESQL_LOCK_KEY})
        yield
    elif dialect in ("mysql", "mariadb") and galera.is_galera(connection):
        with galera.cluster_migration_lock(connection, MARIADB_LOCK_TIMEOUT_SECONDS):
            yield
    elif dialect in ("mysql", "mariadb"):
        lock_name = "CONCAT('userstore.migrations.', DATABASE())"
        acquired = connection.execute(
            text(f"SELECT GET_LOCK({lock_name}, :timeout)"),
            {"timeout": MARIADB_LOCK_TIMEOUT_SECONDS},
        ).scalar()
        if acquired != 1:
            raise TransientDatabaseError(
                f"gave up waiting {MARIADB_LOCK_TIMEOUT_SECONDS}s for the migration lock"
            )
        try:
            yield
        finally:
            connection.execute(text(f"SELECT RELEASE_LOCK({lock_name})"))
    else:
        yield
