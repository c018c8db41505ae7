"""What create_engine sets up on each backend, observed on live connections."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url

import userstore
from tests.databases import migrated_database
from tests.schema import create_schema
from userstore import User, UserRepository, create_session_factory
from userstore.engine import DEFAULT_DATABASE_URL, resolve_url


def test_the_url_comes_from_the_argument_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("USERSTORE_DATABASE_URL", raising=False)
    assert resolve_url() == make_url(DEFAULT_DATABASE_URL) == make_url("sqlite:///userstore.db")

    monkeypatch.setenv("USERSTORE_DATABASE_URL", "sqlite:///from-env.db")
    assert resolve_url().database == "from-env.db"
    assert resolve_url("sqlite:///explicit.db").database == "explicit.db"


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("mariadb://u@h/db", "mariadb+pymysql"),
        ("mysql://u@h/db", "mysql+pymysql"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_server_urls_without_a_driver_get_psycopg_or_pymysql(given: str, driver: str):
    assert resolve_url(given).drivername == driver


def test_a_sqlite_file_database_uses_wal_and_a_busy_timeout(tmp_path: Path):
    engine = userstore.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_an_in_memory_sqlite_database_works_like_the_notebook():
    engine = userstore.create_engine("sqlite:///:memory:")
    try:
        create_schema(engine)
        with create_session_factory(engine)() as session:
            repo = UserRepository(session)
            jenny = repo.add(User(name="Jenny", number=8675309))
            assert repo.get("Jenny") is jenny
            repo.commit()
            assert repr(repo.get("Jenny")) == "User(name=Jenny, number=8675309)"
    finally:
        engine.dispose()


def test_sqlite_transactions_that_read_then_write_wait_instead_of_failing_busy(tmp_path: Path):
    engine = userstore.create_engine(f"sqlite:///{tmp_path / 'race.db'}")
    create_schema(engine)
    factory = create_session_factory(engine)
    first_has_read = threading.Event()
    errors: list[BaseException] = []

    def read_then_write(name: str, wait_for_other: bool) -> None:
        try:
            with factory() as session:
                repo = UserRepository(session)
                if wait_for_other:
                    first_has_read.wait(5)
                repo.count()  # the read
                if not wait_for_other:
                    first_has_read.set()
                    threading.Event().wait(0.3)  # let the other try to get in
                repo.add(User(name=name, number=repo.count()))
                repo.commit()
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [
        threading.Thread(target=read_then_write, args=("first", False)),
        threading.Thread(target=read_then_write, args=("second", True)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert errors == []
        with factory() as session:
            stored = {(u.name, u.number) for u in UserRepository(session).list()}
        # Serialized: the second counted after the first committed.
        assert stored == {("first", 0), ("second", 1)}
    finally:
        engine.dispose()


def test_server_engines_pre_ping_pooled_connections(backend: str, engine: Engine):
    assert engine.pool._pre_ping is (backend != "sqlite")


# What every connection is set to, per backend: UTF-8 everywhere, READ COMMITTED
# on both servers (SQLite's single writer is serializable), strict UTC MariaDB.
_SESSION_SETTINGS = {
    "sqlite": ("SELECT 'UTF-8', 'serializable'", "PRAGMA encoding"),
    "postgresql": (
        "SELECT pg_client_encoding(), current_setting('transaction_isolation')",
        "SHOW server_encoding",
    ),
    "mariadb": (
        "SELECT @@session.character_set_connection, @@session.tx_isolation, "
        "FIND_IN_SET('STRICT_ALL_TABLES', @@session.sql_mode) > 0, @@session.time_zone",
        "SELECT @@character_set_database",
    ),
}
_EXPECTED_SETTINGS = {
    "sqlite": (("UTF-8", "serializable"), "UTF-8"),
    "postgresql": (("UTF8", "read committed"), "UTF8"),
    "mariadb": (
        ("utf8mb4", "READ-COMMITTED", 1, "+00:00"),
        "utf8mb4",
    ),
}


def test_every_connection_speaks_utf8_at_the_expected_isolation(backend: str, engine: Engine):
    session_query, storage_query = _SESSION_SETTINGS[backend]
    with engine.connect() as connection:
        session_settings = tuple(connection.exec_driver_sql(session_query).one())
        storage_encoding = connection.exec_driver_sql(storage_query).scalar()

    assert (session_settings, storage_encoding) == _EXPECTED_SETTINGS[backend]


def test_keyword_arguments_override_userstore_settings(tmp_path: Path):
    engine = userstore.create_engine(
        f"sqlite:///{tmp_path / 'x.db'}", connect_args={"timeout": 1.5}, pool_pre_ping=True
    )
    try:
        assert engine.pool._pre_ping is True
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1500
    finally:
        engine.dispose()


def test_a_connection_returned_mid_transaction_is_rolled_back_by_the_pool(
    backend: str, engine: Engine, plain_engine: Engine, empty_table: None
):
    raw = engine.raw_connection()
    cursor = raw.cursor()
    if backend == "sqlite":  # sqlite3 runs in autocommit; the engine's hook begins for SQLAlchemy
        cursor.execute("BEGIN IMMEDIATE")
    cursor.execute("INSERT INTO users (name, number) VALUES ('abandoned', 1)")
    cursor.close()
    raw.close()  # back to the pool with the INSERT uncommitted

    with engine.connect() as connection:  # the same pooled connection
        connection.exec_driver_sql("SELECT 1")
        connection.commit()
    with plain_engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT count(*) FROM users").scalar()

    assert stored == 0


def test_mariadb_sends_no_rollback_when_a_committed_connection_returns(tmp_path: Path):
    # MariaDB's rule alone: PyMySQL would send a ROLLBACK round trip on every
    # return to the pool; psycopg and sqlite3 already skip it when idle.
    with migrated_database("mariadb", tmp_path) as url:
        engine = userstore.create_engine(url, pool_size=1)
        try:
            factory = create_session_factory(engine)

            def rollbacks() -> int:
                with engine.connect() as connection:
                    count = connection.exec_driver_sql(
                        "SHOW SESSION STATUS LIKE 'Com_rollback'"
                    ).one()[1]
                    connection.commit()
                return int(count)

            before = rollbacks()
            for i in range(5):
                with factory() as session:
                    UserRepository(session).add(User(name=f"u{i}", number=i))
                    session.commit()
            after = rollbacks()
        finally:
            engine.dispose()

    assert after == before
