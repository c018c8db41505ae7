"""The async twin: engines, session factories and a repository for ``asyncio`` apps.

Everything here is also exported from :mod:`userstore` itself. The async
repository runs the sync repository's code on the ``AsyncSession``'s own sync
session, in a greenlet, so both flavours keep one implementation of every rule.
"""

from userstore.asyncio.engine import create_async_engine, create_async_session_factory
from userstore.asyncio.repository import AsyncUserRepository, AsyncUserStream
from userstore.asyncio.unit_of_work import run_unit_of_work_async

__all__ = [
    "AsyncUserRepository",
    "AsyncUserStream",
    "create_async_engine",
    "create_async_session_factory",
    "run_unit_of_work_async",
]
