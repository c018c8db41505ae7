"""userstore: keep an app's users in SQLite, PostgreSQL or MariaDB.

A typed repository over SQLAlchemy 2. Build an engine with
:func:`create_engine`, sessions with :func:`create_session_factory`, and work
through :class:`UserRepository`; asyncio apps use
:func:`create_async_engine`, :func:`create_async_session_factory` and
:class:`AsyncUserRepository`, the same rules as coroutines. Every error derives from
:class:`UserStoreError`.
"""

from userstore.asyncio import (
    AsyncUserRepository,
    AsyncUserStream,
    create_async_engine,
    create_async_session_factory,
)
from userstore.bulk import UpsertResult
from userstore.engine import create_engine, create_session_factory
from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DuplicateUserError,
    InvalidUserError,
    MigrationError,
    SchemaDriftError,
    SchemaOutOfDateError,
    TransientDatabaseError,
    UserNotFoundError,
    UserStoreError,
)
from userstore.models import User
from userstore.repository import UserRepository

__all__ = [
    "AsyncUserRepository",
    "AsyncUserStream",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DuplicateUserError",
    "InvalidUserError",
    "MigrationError",
    "SchemaDriftError",
    "SchemaOutOfDateError",
    "TransientDatabaseError",
    "UpsertResult",
    "User",
    "UserNotFoundError",
    "UserRepository",
    "UserStoreError",
    "create_async_engine",
    "create_async_session_factory",
    "create_engine",
    "create_session_factory",
]
