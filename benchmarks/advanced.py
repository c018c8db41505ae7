"""advanced-alchemy's repository for userstore's ``User`` model, when the package is installed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from benchmarks.framework import ADVANCED_ALCHEMY, Run, Variant
from userstore import User

try:
    from advanced_alchemy.repository import SQLAlchemySyncRepository
except ImportError:
    UNAVAILABLE: str | None = "advanced-alchemy not installed"
    _repository_class: Any = None
else:
    UNAVAILABLE = None

    class UserRepository(SQLAlchemySyncRepository[User]):
        """advanced-alchemy's generic repository over ``userstore.User``, keyed by name."""

        model_type = User
        id_attribute = "name"

    _repository_class = UserRepository


def repository(session: Session) -> Any:
    """Return advanced-alchemy's repository on ``session``.

    ``auto_refresh=False``: its default re-SELECTs every added row after the
    flush, which userstore and the ORM variants do not do; turning it off keeps
    the comparison to the same work.
    """
    return _repository_class(session=session, auto_refresh=False)


def variant(run: Run) -> Variant:
    """The advanced-alchemy variant running ``run``, or n/a when it is not installed."""
    if UNAVAILABLE is not None:
        return Variant.not_available(ADVANCED_ALCHEMY, UNAVAILABLE)
    return Variant(ADVANCED_ALCHEMY, run, optional=True)
