"""Bringing a database's users schema into being."""

from __future__ import annotations

from sqlalchemy import Engine

from userstore.models import Base


def ensure_schema(engine: Engine) -> None:
    """Create the users table if it is missing."""
    Base.metadata.create_all(engine)
