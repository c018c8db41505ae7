"""The app's own Alembic history beside userstore's, and the start-up schema check."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine
from userstore import MigrationError, app_alembic, migrations

from userapp import create_app, schema
from userapp.notes import Base


def test_the_migrated_schema_matches_the_app_models_and_hides_userstores(app_database: Engine):
    with app_database.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"target_metadata": Base.metadata, **app_alembic.configure_options()},
        )
        differences = compare_metadata(context, Base.metadata)

    assert differences == []  # not even a drop_table("users")


def test_the_database_is_at_both_heads(app_database: Engine):
    with app_database.connect() as connection:
        assert schema.app_revision(connection) == schema.app_head() == "0001_notes"
    migrations.assert_current(app_database)


async def test_the_app_starts_on_a_database_at_both_heads_and_serves_it(app_database: Engine):
    app = create_app(app_database.url.render_as_string(hide_password=False))
    transport = httpx.ASGITransport(app=app)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://userapp.test") as client,
    ):
        response = await client.get("/users/nobody/notes")

    assert response.status_code == 404


async def test_the_app_refuses_to_start_before_its_own_migrations_ran(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'userstore-only.db'}"
    migrations.upgrade(url)  # userstore's history only
    app = create_app(url)

    with pytest.raises(MigrationError, match="run `alembic upgrade head`"):
        async with app.router.lifespan_context(app):
            pass
