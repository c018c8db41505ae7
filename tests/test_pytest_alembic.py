"""pytest-alembic's built-in migration tests, run on every backend against our alembic.ini.

pytest-alembic hands ``alembic/env.py`` the ``alembic_engine`` fixture's engine (an ``Engine``
in ``config.attributes["connection"]``), so these also show that env.py accepts one. Each test
gets a fresh throwaway database on its backend. Its plugin is not loaded (see pyproject.toml's
addopts), so the runner fixture is made here with its public ``create_alembic_fixture``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_alembic import MigrationContext, create_alembic_fixture
from pytest_alembic import tests as builtin
from sqlalchemy import Engine, inspect

import userstore
from tests.databases import throwaway_database
from userstore import migrations
from userstore.migration_env import VERSION_TABLE

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def alembic_engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """A userstore engine on an empty database of its own, on the backend under test."""
    with throwaway_database(backend, tmp_path) as url:
        engine = userstore.create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


# The repository's own alembic.ini, found wherever pytest was started from.
alembic_runner = create_alembic_fixture({"file": str(ROOT / "alembic.ini")})


def test_the_history_has_a_single_head(alembic_runner: MigrationContext):
    builtin.test_single_head_revision(alembic_runner)


def test_an_empty_database_upgrades_to_head(
    alembic_runner: MigrationContext, alembic_engine: Engine
):
    builtin.test_upgrade(alembic_runner)

    assert migrations.current(alembic_engine) == migrations.head()
    assert set(inspect(alembic_engine).get_table_names()) == {"users", VERSION_TABLE}


def test_the_migrated_schema_matches_the_models(alembic_runner: MigrationContext):
    builtin.test_model_definitions_match_ddl(alembic_runner)


def test_every_revision_downgrades_and_upgrades_again(alembic_runner: MigrationContext):
    builtin.test_up_down_consistency(alembic_runner)
