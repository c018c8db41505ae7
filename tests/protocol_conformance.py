"""Typed assignments for `mypy --strict`: each repository satisfies its flavour's protocol.

Not a test module: ``tests/test_fake.py`` runs mypy on it. Both the real
repositories and the in-memory fakes are assigned to the protocols an app
types against, so a verb that drifts in name, arguments or result type on
either side fails the type check.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from userstore import (
    AsyncUserRepository,
    AsyncUserRepositoryProtocol,
    AsyncUserStreamProtocol,
    UserRepository,
    UserRepositoryProtocol,
)
from userstore.testing import (
    AsyncInMemoryUserRepository,
    InMemoryUserRepository,
    InMemoryUserStore,
)


def sync_repositories(session: Session, store: InMemoryUserStore) -> list[UserRepositoryProtocol]:
    real: UserRepositoryProtocol = UserRepository(session)
    fake: UserRepositoryProtocol = InMemoryUserRepository(store)
    from_store: UserRepositoryProtocol = store.repository()
    return [real, fake, from_store]


def async_repositories(
    session: AsyncSession, store: InMemoryUserStore
) -> list[AsyncUserRepositoryProtocol]:
    real: AsyncUserRepositoryProtocol = AsyncUserRepository(session)
    fake: AsyncUserRepositoryProtocol = AsyncInMemoryUserRepository(store)
    from_store: AsyncUserRepositoryProtocol = store.async_repository()
    return [real, fake, from_store]


def streams(store: InMemoryUserStore, session: AsyncSession) -> list[AsyncUserStreamProtocol]:
    fake: AsyncUserStreamProtocol = store.async_repository().iter_all(batch_size=10)
    real: AsyncUserStreamProtocol = AsyncUserRepository(session).iter_all()
    return [fake, real]
