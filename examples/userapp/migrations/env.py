"""Alembic environment for userapp's own history (Alembic's stock shape).

Two changes from ``alembic init``: the database comes from userstore
(``USERSTORE_DATABASE_URL``, through :func:`userstore.create_engine`, so the
app migrates with the engine settings it runs with), and
``userstore.app_alembic.configure_options()`` hides userstore's ``users`` and
``userstore_alembic_version`` from this history, so autogenerate never
proposes to drop them. A caller may hand over a ``Connection`` or an
``Engine`` in ``config.attributes["connection"]`` (the app's tests do).
"""

from __future__ import annotations

from logging.config import fileConfig

import userstore
from alembic import context
from sqlalchemy import Connection, Engine
from userstore import app_alembic
from userstore.engine import resolve_url, write_intent

from userapp.notes import Base

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit the migration SQL as a script, without a database connection."""
    context.configure(
        url=resolve_url(config.get_main_option("sqlalchemy.url") or None),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **app_alembic.configure_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    dialect = connection.dialect.name
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite: tables are altered by copying them (batch mode), and userstore's engine
        # makes DDL transactional. MariaDB cannot roll DDL back: each revision commits alone.
        render_as_batch=dialect == "sqlite",
        transactional_ddl=True if dialect == "sqlite" else None,
        transaction_per_migration=dialect in ("mysql", "mariadb"),
        **app_alembic.configure_options(),
    )
    # On SQLite, take the write lock up front (BEGIN IMMEDIATE): DDL in one transaction.
    with write_intent(), context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection or engine, or one to the configured URL."""
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run_on(given)
    elif isinstance(given, Engine):
        with given.connect() as connection:
            _run_on(connection)
    else:
        engine = userstore.create_engine(config.get_main_option("sqlalchemy.url") or None)
        try:
            with engine.connect() as connection:
                _run_on(connection)
        finally:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
