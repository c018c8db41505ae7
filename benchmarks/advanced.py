"""advanced-alchemy's repositories for userstore's ``User`` model, when the package is installed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from benchmarks.framework import ADVANCED_ALCHEMY, ADVANCED_ALCHEMY_ASYNC, ASYNC, Run, Variant
from userstore import User

try:
    from advanced_alchemy.repository import (
        SQLAlchemyAsyncRepository,
        SQLAlchemySyncRepository,
    )
except ImportError:
    UNAVAILABLE: str | None = "advanced-alchemy not installed"
    _repository_class: Any = None
    _async_repository_class: Any = None
else:
    UNAVAILABLE = None

    class UserRepository(SQLAlchemySyncRepository[User]):
        """advanced-alchemy's generic repository over ``userstore.User``, keyed by name."""

        model_type = User
        id_attribute = "name"

    class AsyncUserRepository(SQLAlchemyAsyncRepository[User]):
        """The same, as advanced-alchemy's async repository."""

        model_type = User
        id_attribute = "name"

    _repository_class = UserRepository
    _async_repository_class = AsyncUserRepository


def repository(session: Session) -> Any:
    """Return advanced-alchemy's repository on ``session``.

    ``auto_refresh=False``: its default re-SELECTs every added row after the
    flush, which userstore and the ORM variants do not do; turning it off keeps
    the comparison to the same work.
    """
    return _repository_class(session=session, auto_refresh=False)


def async_repository(session: AsyncSession) -> Any:
    """Return advanced-alchemy's async repository on ``session``, set up as :func:`repository`."""
    return _async_repository_class(session=session, auto_refresh=False)


def variant(run: Run) -> Variant:
    """The advanced-alchemy variant running ``run``, or n/a when it is not installed."""
    if UNAVAILABLE is not None:
        return Variant.not_available(ADVANCED_ALCHEMY, UNAVAILABLE)
    return Variant(ADVANCED_ALCHEMY, run, optional=True)


def async_variant(run: Run | None, unavailable: str | None) -> Variant:
    """The advanced-alchemy async variant, or n/a (not installed, or no async stack here)."""
    reason = UNAVAILABLE or unavailable
    if reason is not None or run is None:
        return Variant.not_available(ADVANCED_ALCHEMY_ASYNC, reason or "no async stack", ASYNC)
    return Variant(ADVANCED_ALCHEMY_ASYNC, run, optional=True, flavour=ASYNC)
