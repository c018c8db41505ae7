"""The migrations own the users schema: the pytest-alembic set and more, on every backend."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, String, inspect, text

import userstore
from tests.databases import throwaway_database
from tests.snapshots import schema_snapshot
from userstore import (
    MigrationError,
    SchemaDriftError,
    SchemaOutOfDateError,
    migrations,
)
from userstore.models import Base
from userstore.timestamps import UTCDateTime

REVISIONS = ["0001_users", "0002_timestamps", "0003_statement_time"]
VERSION_TABLE = "userstore_alembic_version"
PAUSE_SECONDS = 0.05


@pytest.fixture
def fresh_engine(fresh_database_url: URL) -> Iterator[Engine]:
    engine = userstore.create_engine(fresh_database_url)
    yield engine
    engine.dispose()


def _rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_the_revisions_form_one_line_with_a_single_head():
    scripts = ScriptDirectory(str(migrations.script_location()))

    assert scripts.get_heads() == [REVISIONS[-1]]
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == REVISIONS
    assert migrations.head() == REVISIONS[-1]


def test_upgrade_from_base_to_head_builds_the_schema_the_model_declares(fresh_engine: Engine):
    assert migrations.current(fresh_engine) is None

    migrations.upgrade(fresh_engine)

    assert migrations.current(fresh_engine) == REVISIONS[-1]
    migrations.check(fresh_engine)
    migrations.assert_current(fresh_engine)
    assert {c["name"] for c in inspect(fresh_engine).get_columns("users")} == {
        "name",
        "number",
        "created_at",
        "updated_at",
    }


def test_downgrade_from_head_to_base_removes_the_users_table(fresh_engine: Engine):
    migrations.upgrade(fresh_engine)

    migrations.downgrade(fresh_engine, "base")

    assert migrations.current(fresh_engine) is None
    assert "users" not in inspect(fresh_engine).get_table_names()


def test_each_revision_goes_up_down_and_up_again_to_the_same_schema(fresh_engine: Engine):
    previous = "base"
    for revision in REVISIONS:
        migrations.upgrade(fresh_engine, revision)
        first = schema_snapshot(fresh_engine)

        migrations.downgrade(fresh_engine, previous)
        migrations.upgrade(fresh_engine, revision)

        assert schema_snapshot(fresh_engine) == first
        assert migrations.current(fresh_engine) == revision
        previous = revision


def test_the_models_and_the_migrations_build_the_same_schema(
    backend: str, fresh_engine: Engine, tmp_path: Path
):
    migrations.upgrade(fresh_engine)
    with throwaway_database(backend, tmp_path / "models") as models_url:
        models_engine = userstore.create_engine(models_url)
        try:
            Base.metadata.create_all(models_engine)  # only here: the model vs the migrations
            from_models = schema_snapshot(models_engine)
        finally:
            models_engine.dispose()

    assert schema_snapshot(fresh_engine, exclude=(VERSION_TABLE,)) == from_models


_DRIFTS = {
    "sqlite": [
        "ALTER TABLE users ADD COLUMN extra INTEGER",
        "ALTER TABLE users DROP COLUMN number",
    ],
    "postgresql": [
        "ALTER TABLE users ADD COLUMN extra INTEGER",
        'ALTER TABLE users ALTER COLUMN name TYPE VARCHAR(255) COLLATE "en-US-x-icu"',
        "ALTER TABLE users ALTER COLUMN updated_at DROP DEFAULT",
        "ALTER TABLE users ALTER COLUMN number TYPE BIGINT",
        "ALTER TABLE users ALTER COLUMN created_at SET DEFAULT now()",  # 0003 undone by hand
    ],
    "mariadb": [
        "ALTER TABLE users ADD COLUMN extra INTEGER",
        "ALTER TABLE users MODIFY name VARCHAR(255) CHARACTER SET utf8mb4 "
        "COLLATE utf8mb4_bin NOT NULL",
        "ALTER TABLE users MODIFY created_at DATETIME NOT NULL DEFAULT (UTC_TIMESTAMP(6))",
        "ALTER TABLE users MODIFY updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
    ],
}


@pytest.mark.parametrize("drift", range(max(map(len, _DRIFTS.values()))))
def test_check_reports_a_schema_changed_by_hand(backend: str, fresh_engine: Engine, drift: int):
    statements = _DRIFTS[backend]
    statement = statements[drift % len(statements)]
    migrations.upgrade(fresh_engine)
    with fresh_engine.begin() as connection:
        connection.exec_driver_sql(statement)

    with pytest.raises(SchemaDriftError) as raised:
        migrations.check(fresh_engine)

    assert raised.value.differences


def test_data_written_at_revision_1_survives_the_upgrade_and_the_downgrade(
    fresh_engine: Engine,
):
    rows = [("Jenny", 8675309), ("jenny", None), ("O'Brien 😀", -(2**31)), ("Jénny ", 2**31 - 1)]
    migrations.upgrade(fresh_engine, "0001_users")
    with fresh_engine.begin() as connection:
        connection.execute(
            text("INSERT INTO users (name, number) VALUES (:name, :number)"),
            [{"name": name, "number": number} for name, number in rows],
        )
    before = datetime.now(UTC) - timedelta(seconds=2)

    migrations.upgrade(fresh_engine)

    with userstore.create_session_factory(fresh_engine)() as session:
        users = userstore.UserRepository(session).list()
        assert [(u.name, u.number) for u in users] == sorted(rows)
        for user in users:
            assert user.created_at.tzinfo is not None
            assert before <= user.created_at <= datetime.now(UTC) + timedelta(seconds=2)
            assert user.updated_at == user.created_at

    migrations.downgrade(fresh_engine, "0001_users")

    assert sorted(_rows(fresh_engine, "SELECT name, number FROM users")) == sorted(rows)
    assert {c["name"] for c in inspect(fresh_engine).get_columns("users")} == {"name", "number"}


def _stored_rows(engine: Engine) -> list[tuple[object, ...]]:
    """Every row with its stamps, read back as aware datetimes, in name order."""
    query = text("SELECT name, number, created_at, updated_at FROM users ORDER BY name")
    typed = query.columns(name=String(), created_at=UTCDateTime(), updated_at=UTCDateTime())
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(typed)]


def _gap_between_two_inserts_in_one_transaction(engine: Engine) -> timedelta:
    """How far apart the column defaults stamp two plain inserts sent 50 ms apart."""
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM users")
        connection.exec_driver_sql("INSERT INTO users (name) VALUES ('first')")
        time.sleep(PAUSE_SECONDS)
        connection.exec_driver_sql("INSERT INTO users (name) VALUES ('second')")
    first, second = (created_at for _, _, created_at, _ in _stored_rows(engine))  # name order
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM users")
    assert isinstance(first, datetime)
    assert isinstance(second, datetime)
    return second - first


def _defaults(engine: Engine) -> dict[str, str]:
    return {
        c["name"]: str(c["default"]) for c in inspect(engine).get_columns("users") if c["default"]
    }


def test_revision_3_gives_the_column_defaults_the_statements_time_and_its_downgrade_undoes_it(
    backend: str, fresh_engine: Engine
):
    migrations.upgrade(fresh_engine, "0002_timestamps")
    at_2 = schema_snapshot(fresh_engine, exclude=(VERSION_TABLE,))
    at_2_gap = _gap_between_two_inserts_in_one_transaction(fresh_engine)

    migrations.upgrade(fresh_engine, "0003_statement_time")
    at_3 = schema_snapshot(fresh_engine, exclude=(VERSION_TABLE,))
    at_3_gap = _gap_between_two_inserts_in_one_transaction(fresh_engine)
    at_3_defaults = _defaults(fresh_engine)

    migrations.downgrade(fresh_engine, "0002_timestamps")

    assert at_3_gap >= timedelta(milliseconds=40)
    assert schema_snapshot(fresh_engine, exclude=(VERSION_TABLE,)) == at_2
    if backend == "postgresql":
        # now() is the transaction's start: the very stamp 0003 exists to replace.
        assert at_2_gap == timedelta(0)
        assert at_3_defaults == {
            "created_at": "statement_timestamp()",
            "updated_at": "statement_timestamp()",
        }
        assert set(_defaults(fresh_engine).values()) == {"now()"}
        assert _gap_between_two_inserts_in_one_transaction(fresh_engine) == timedelta(0)
    else:
        # Already the statement's time: 0003 leaves these backends' schemas as they are.
        assert at_2_gap >= timedelta(milliseconds=40)
        assert at_3 == at_2


def test_data_and_stamps_written_at_revision_2_survive_revision_3_both_ways(
    fresh_engine: Engine,
):
    migrations.upgrade(fresh_engine, "0002_timestamps")
    with userstore.create_session_factory(fresh_engine)() as session:
        repo = userstore.UserRepository(session)
        repo.add_many([("Jenny", 8675309), ("jenny", None), ("O'Brien 😀", -(2**31))])
        repo.commit()
        repo.get_one("jenny").number = 2**31 - 1
        repo.commit()
    before = _stored_rows(fresh_engine)

    migrations.upgrade(fresh_engine, "0003_statement_time")
    after_upgrade = _stored_rows(fresh_engine)
    migrations.downgrade(fresh_engine, "0002_timestamps")

    assert [row[:2] for row in before] == [
        ("Jenny", 8675309),
        ("O'Brien 😀", -(2**31)),
        ("jenny", 2**31 - 1),
    ]
    assert after_upgrade == before
    assert _stored_rows(fresh_engine) == before


def test_an_apps_own_alembic_history_and_tables_are_left_alone(fresh_engine: Engine):
    with fresh_engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
        )
        connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('app_rev_7')")
        connection.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
        connection.exec_driver_sql("INSERT INTO orders VALUES (1, 100)")

    migrations.upgrade(fresh_engine)
    migrations.check(fresh_engine)  # no drop of 'orders' or 'alembic_version' is proposed
    migrations.downgrade(fresh_engine, "base")
    migrations.upgrade(fresh_engine)

    assert _rows(fresh_engine, "SELECT version_num FROM alembic_version") == [("app_rev_7",)]
    assert _rows(fresh_engine, f"SELECT version_num FROM {VERSION_TABLE}") == [(REVISIONS[-1],)]
    assert _rows(fresh_engine, "SELECT id, total FROM orders") == [(1, 100)]


def test_assert_current_names_both_revisions_when_the_database_is_behind(fresh_engine: Engine):
    with pytest.raises(SchemaOutOfDateError) as unmigrated:
        migrations.assert_current(fresh_engine)
    assert unmigrated.value.database_revision is None

    migrations.upgrade(fresh_engine, "0001_users")
    with pytest.raises(SchemaOutOfDateError) as behind:
        migrations.assert_current(fresh_engine)

    assert (behind.value.database_revision, behind.value.code_revision) == (
        "0001_users",
        REVISIONS[-1],
    )
    assert "0001_users" in str(behind.value)
    assert REVISIONS[-1] in str(behind.value)


def test_assert_current_names_both_revisions_when_the_database_is_ahead(fresh_engine: Engine):
    migrations.upgrade(fresh_engine)
    with fresh_engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '9999_future'")

    with pytest.raises(SchemaOutOfDateError) as ahead:
        migrations.assert_current(fresh_engine)

    assert ahead.value.database_revision == "9999_future"
    assert ahead.value.code_revision == REVISIONS[-1]
    assert "9999_future" in str(ahead.value)


def test_an_unknown_revision_is_a_migration_error(fresh_engine: Engine):
    with pytest.raises(MigrationError, match="nope"):
        migrations.upgrade(fresh_engine, "nope")


def _upgrade_when_released(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait(60)
    migrations.upgrade(url)


def test_four_processes_upgrading_at_once_all_succeed_and_end_at_head(
    fresh_database_url: URL, fresh_engine: Engine
):
    url = fresh_database_url.render_as_string(hide_password=False)
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(4)
    workers = [spawn.Process(target=_upgrade_when_released, args=(url, barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)

    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert migrations.current(fresh_engine) == REVISIONS[-1]
    assert _rows(fresh_engine, f"SELECT version_num FROM {VERSION_TABLE}") == [(REVISIONS[-1],)]
    migrations.check(fresh_engine)
