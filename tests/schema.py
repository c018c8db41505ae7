"""How the tests get the users schema into a database."""

from __future__ import annotations

from sqlalchemy import Engine

from userstore import migrations


def create_schema(engine: Engine) -> None:
    """Migrate the database to head: the schema comes only from migrations."""
    migrations.upgrade(engine)
