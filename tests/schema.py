"""How the tests get the users schema into a database."""

from __future__ import annotations

from sqlalchemy import Engine

from userstore.models import Base


def create_schema(engine: Engine) -> None:
    """Create the users table as the model declares it."""
    Base.metadata.create_all(engine)
