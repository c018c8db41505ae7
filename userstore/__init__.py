"""userstore: keep an app's users in SQLite, PostgreSQL or MariaDB.

A typed repository over SQLAlchemy 2. Build an engine with
:func:`create_engine`, sessions with :func:`create_session_factory`, and work
through :class:`UserRepository`; asyncio apps use
:func:`create_async_engine`, :func:`create_async_session_factory` and
:class:`AsyncUserRepository`, the same rules as coroutines.
:func:`run_unit_of_work` (and :func:`run_unit_of_work_async`) commits a unit of
work, running it again after a transient failure. Every error derives from
:class:`UserStoreError`. :mod:`userstore.observability` has the ``userstore``
logger's settings and OpenTelemetry's (see README, "Observability").
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# The errors need nothing but Python: they are here at once.
from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DuplicateUserError,
    InvalidReadTokenError,
    InvalidUserError,
    MigrationError,
    SchemaDriftError,
    SchemaOutOfDateError,
    TransientDatabaseError,
    UserNotFoundError,
    UserStoreError,
    WriteSetTooLargeError,
)

if _TYPE_CHECKING:
    from userstore.asyncio import (
        AsyncUserRepository,
        AsyncUserStream,
        create_async_engine,
        create_async_session_factory,
        run_unit_of_work_async,
    )
    from userstore.bulk import UpsertResult
    from userstore.engine import create_engine, create_session_factory
    from userstore.models import User
    from userstore.protocols import (
        AsyncUserRepositoryProtocol,
        AsyncUserStreamProtocol,
        UserRepositoryProtocol,
    )
    from userstore.repository import UserRepository
    from userstore.unit_of_work import run_unit_of_work

# Everything else loads on first use, so ``import userstore`` (and the command
# line's start, where a Ctrl-C must still end in one line) does not wait for
# SQLAlchemy. The async twin also needs greenlet (the asyncio extra), so a
# sync-only install imports userstore without it.
_ASYNC_NAMES = frozenset(
    {
        "AsyncUserRepository",
        "AsyncUserStream",
        "create_async_engine",
        "create_async_session_factory",
        "run_unit_of_work_async",
    }
)
_LAZY_NAMES: dict[str, str] = {
    **dict.fromkeys(_ASYNC_NAMES, "userstore.asyncio"),
    "UpsertResult": "userstore.bulk",
    "create_engine": "userstore.engine",
    "create_session_factory": "userstore.engine",
    "User": "userstore.models",
    "AsyncUserRepositoryProtocol": "userstore.protocols",
    "AsyncUserStreamProtocol": "userstore.protocols",
    "UserRepositoryProtocol": "userstore.protocols",
    "UserRepository": "userstore.repository",
    "run_unit_of_work": "userstore.unit_of_work",
}


def __getattr__(name: str) -> _Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'userstore' has no attribute {name!r}")
    try:
        module = _importlib.import_module(module_name)
    except ImportError as exc:
        if name not in _ASYNC_NAMES:
            raise
        raise ConfigurationError(
            f"userstore.{name} needs the async extra: pip install 'userstore[asyncio]' ({exc})"
        ) from None
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))


__all__ = [
    "AsyncUserRepository",
    "AsyncUserRepositoryProtocol",
    "AsyncUserStream",
    "AsyncUserStreamProtocol",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DuplicateUserError",
    "InvalidReadTokenError",
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
    "WriteSetTooLargeError",
    "create_async_engine",
    "create_async_session_factory",
    "create_engine",
    "create_session_factory",
    "run_unit_of_work",
    "run_unit_of_work_async",
]
