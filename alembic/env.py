"""Alembic environment for userstore's migrations (Alembic's stock shape)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, Engine

from userstore.engine import create_engine, write_intent
from userstore.migration_env import configure_options, migration_lock, migration_url
from userstore.models import Base

config = context.config

# An app's own alembic.ini may have no logging sections; then leave logging alone.
if (
    config.config_file_name is not None
    and config.attributes.get("configure_logging", True)
    and config.file_config.has_section("loggers")
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit the migration SQL as a script, without a database connection."""
    url = migration_url(config)
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **configure_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        **configure_options(connection.dialect.name),
    )
    # On SQLite the migration transaction takes the write lock up front: it is the lock.
    with write_intent(), context.begin_transaction(), migration_lock(connection):
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through a live connection: the caller's, or one to the configured URL.

    The caller may put a ``Connection`` in ``config.attributes["connection"]``
    (userstore.migrations does), or an ``Engine`` (pytest-alembic's convention):
    then a connection is taken from it, and the engine is left to its owner.
    """
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run_on(given)
        return
    if isinstance(given, Engine):
        with given.connect() as connection:
            _run_on(connection)
        return
    if given is not None:
        raise TypeError(
            'config.attributes["connection"] must be a sqlalchemy Connection or Engine, '
            f"not {type(given).__name__}"
        )
    engine = create_engine(migration_url(config))
    try:
        with engine.connect() as connection:
            _run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
