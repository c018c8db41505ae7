"""userstore: keep an app's users in SQLite, PostgreSQL or MariaDB.

A typed repository over SQLAlchemy 2. Build an engine with
:func:`create_engine`, sessions with :func:`create_session_factory`, and work
through :class:`UserRepository`; asyncio apps use
:func:`create_async_engine`, :func:`create_async_session_factory` and
:class:`AsyncUserRepository`, the same rules as coroutines.
:func:`run_unit_of_work` (and :func:`run_unit_of_work_async`) commits a unit of
work, running it again after a transient failure. Every error derives from
:class:`UserStoreError`.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

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
from userstore.protocols import (
    AsyncUserRepositoryProtocol,
    AsyncUserStreamProtocol,
    UserRepositoryProtocol,
)
from userstore.repository import UserRepository
from userstore.unit_of_work import run_unit_of_work

if _TYPE_CHECKING:
    from userstore.asyncio import (
        AsyncUserRepository,
        AsyncUserStream,
        create_async_engine,
        create_async_session_factory,
        run_unit_of_work_async,
    )

# The async twin needs greenlet (the asyncio extra): it is imported on first use,
# so a sync-only install imports userstore without it.
_ASYNC_NAMES = frozenset(
    {
        "AsyncUserRepository",
        "AsyncUserStream",
        "create_async_engine",
        "create_async_session_factory",
        "run_unit_of_work_async",
    }
)


def __getattr__(name: str) -> _Any:
    if name in _ASYNC_NAMES:
        try:
            from userstore import asyncio as twin
        except ImportError as exc:
            raise ConfigurationError(
                f"userstore.{name} needs the async extra: pip install 'userstore[asyncio]' ({exc})"
            ) from None
        return getattr(twin, name)
    raise AttributeError(f"module 'userstore' has no attribute {name!r}")


__all__ = [
    "AsyncUserRepository",
    "AsyncUserRepositoryProtocol",
    "AsyncUserStream",
    "AsyncUserStreamProtocol",
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
    "UserRepositoryProtocol",
    "UserStoreError",
    "create_async_engine",
    "create_async_session_factory",
    "create_engine",
    "create_session_factory",
    "run_unit_of_work",
    "run_unit_of_work_async",
]
