"""Is the database's schema the one this code needs? Checked once, at start-up.

userstore's migrations (``userstore upgrade``) and then the app's own
(``alembic upgrade head`` in this directory) must both be at head; an app that
served a schema behind its code would fail request by request instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from userstore import MigrationError, migrations

ALEMBIC_INI: Final = Path(__file__).resolve().parent.parent / "alembic.ini"


def app_head() -> str | None:
    """The head revision of the app's own history (``migrations/``)."""
    return ScriptDirectory.from_config(Config(ALEMBIC_INI)).get_current_head()


def app_revision(connection: Connection) -> str | None:
    """The revision of the app's history the database is at (``None``: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


async def assert_current(engine: AsyncEngine) -> None:
    """Refuse a database whose userstore schema or app schema is not at head.

    Raises:
        SchemaOutOfDateError: userstore's schema is behind or ahead of this code.
        MigrationError: the app's own schema is; the message names both
            revisions and the command to run.
    """
    await migrations.assert_current_async(engine)
    async with engine.connect() as connection:
        revision = await connection.run_sync(app_revision)
    head = app_head()
    if revision != head:
        raise MigrationError(
            f"the app's schema is at revision {revision or '<none>'}, but this code needs "
            f"{head}; run `alembic upgrade head` (after `userstore upgrade`)"
        )
