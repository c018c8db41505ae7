"""What create_engine sets up on each backend, observed on live connections."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import URL, Engine, make_url, text

import userstore
from tests.databases import (
    SERVER_URLS,
    create_test_engine,
    engine_options,
    migrated_database,
    prepare_engine,
    require_target,
    throwaway_database,
)
from tests.flavours import FlavouredEngine
from tests.schema import create_schema
from userstore import (
    ConfigurationError,
    DatabaseError,
    User,
    UserRepository,
    create_session_factory,
)
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
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
        ("sqlite+pysqlite:///x.db", "sqlite"),
    ],
)
def test_server_urls_without_a_driver_get_psycopg_or_pymysql(given: str, driver: str):
    assert resolve_url(given).drivername == driver


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg"),  # one URL serves both flavours
        ("postgresql+psycopg_async://u@h/db", "postgresql+psycopg_async"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("mariadb://u@h/db", "mariadb+asyncmy"),
        ("mariadb+pymysql://u@h/db", "mariadb+asyncmy"),
        ("mysql+aiomysql://u@h/db", "mysql+aiomysql"),
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite"),
    ],
)
def test_async_urls_get_their_backends_async_driver(given: str, driver: str):
    assert resolve_url(given, flavour="async").drivername == driver


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql+asyncpg://u@h/db", "postgresql+psycopg"),
        ("mariadb+asyncmy://u@h/db", "mariadb+pymysql"),
        ("sqlite+aiosqlite:///x.db", "sqlite"),
    ],
)
def test_an_async_url_given_to_the_sync_engine_gets_the_sync_driver(given: str, driver: str):
    assert resolve_url(given).drivername == driver


@pytest.mark.parametrize("url", ["postgresql+pg8000://u@h/db", "mariadb+mysqldb://u@h/db"])
def test_a_driver_userstore_does_not_speak_is_refused_by_both_flavours(url: str):
    with pytest.raises(ConfigurationError, match="does not support the driver"):
        userstore.create_engine(url)
    with pytest.raises(ConfigurationError, match="does not support the driver"):
        userstore.create_async_engine(url)


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


@pytest.mark.not_on_fake(reason="it checks the connection pool of a real engine")
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


_LOCK_THE_ROW_AT_ONCE = {
    "sqlite": "UPDATE users SET number = 3 WHERE name = 'locked'",
    "postgresql": "SELECT name FROM users WHERE name = 'locked' FOR UPDATE NOWAIT",
    "mariadb": "SELECT name FROM users WHERE name = 'locked' FOR UPDATE",
}
_DONT_WAIT = {
    "sqlite": {"connect_args": {"timeout": 0.2}},
    "postgresql": {},
    "mariadb": {"connect_args": {"init_command": "SET innodb_lock_wait_timeout = 1"}},
}


@pytest.mark.not_on_fake(reason="it checks the connection pool of a real engine")
@pytest.mark.parametrize("through", ["raw connection", "session"])
def test_a_connection_given_back_after_a_failed_statement_holds_no_lock(
    backend: str, engine: Engine, database_url: URL, empty_table: None, through: str
):
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO users (name, number) VALUES ('locked', 1)")
    duplicate = "INSERT INTO users (name, number) VALUES ('locked', 2)"
    # The failing statement opens the transaction: the duplicate-key check
    # locks the stored row, and the driver's last OK reply said "no transaction".
    if through == "raw connection":
        raw = engine.raw_connection()
        cursor = raw.cursor()
        with pytest.raises(Exception, match=r"(?i)duplicate|unique"):
            cursor.execute(duplicate)
        cursor.close()
        raw.close()
    else:
        with create_session_factory(engine)() as session, pytest.raises(userstore.DatabaseError):
            session.execute(text(duplicate))

    impatient = sqlalchemy.create_engine(database_url, **_DONT_WAIT[backend])
    try:
        with impatient.begin() as connection:
            connection.exec_driver_sql(_LOCK_THE_ROW_AT_ONCE[backend])
    finally:
        impatient.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql+psycopg2://u@h/db",
            "driver 'psycopg2'.*postgresql\\+psycopg",
        ),
        ("mariadb+mariadbconnector://u@h/db", "does not support the driver.*mariadb\\+pymysql"),
        ("oracle://u@h/db", "SQLite, PostgreSQL or MariaDB"),
        ("not a url at all", "not a database URL"),
    ],
)
def test_a_url_userstore_cannot_use_is_refused_before_connecting(url: str, message: str):
    with pytest.raises(ConfigurationError, match=message):
        userstore.create_engine(url)


def test_a_missing_driver_is_refused_naming_the_extra_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed

    with pytest.raises(ConfigurationError, match=r"pip install 'userstore\[postgresql\]'"):
        userstore.create_engine("postgresql://u@h/db")


def test_an_engine_option_sqlalchemy_rejects_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="no_such_option"):
        userstore.create_engine("sqlite://", no_such_option=1)


def test_an_isolation_level_the_backend_lacks_is_refused_before_connecting():
    with pytest.raises(ConfigurationError, match="isolation_level must be one of"):
        userstore.create_engine("sqlite://", isolation_level="BOGUS")
    with pytest.raises(ConfigurationError, match="READ COMMITTED"):
        userstore.create_engine("postgresql://u@h/db", isolation_level="SNAPSHOT")


def test_a_connect_option_the_driver_does_not_take_is_a_configuration_error(
    backend: str, database_url: URL
):
    if backend == "sqlite":
        url, options = database_url, {"connect_args": {"no_such_option": 1}}
    else:  # a stray query parameter in the URL reaches the driver as a keyword
        url, options = database_url.update_query_dict({"no_such_option": "1"}), {}
    engine = userstore.create_engine(url, **options)
    try:
        with pytest.raises(ConfigurationError, match="no_such_option"):
            engine.connect()
    finally:
        engine.dispose()


# psycopg gives no code for a failure to connect, MariaDB does (README, Errors).
_REFUSED_CREDENTIALS = {
    "postgresql": userstore.DatabaseUnavailableError,
    "mariadb": userstore.DatabaseError,
}


@pytest.mark.parametrize("server", sorted(_REFUSED_CREDENTIALS))
def test_credentials_the_server_rejects_raise_the_documented_error(server: str, tmp_path: Path):
    with throwaway_database(server, tmp_path) as url:
        engine = userstore.create_engine(url.set(username="no_such_user", password="x"))
        try:
            with pytest.raises(userstore.DatabaseError) as raised:
                engine.connect()
            assert type(raised.value) is _REFUSED_CREDENTIALS[server]
        finally:
            engine.dispose()


def _broken_version_query(_connection: object) -> None:
    raise TypeError("'>=' not supported between instances of 'NoneType' and 'tuple'")


@pytest.mark.not_on_fake(reason="it breaks a real engine's set-up of its first connection")
def test_a_failure_while_setting_up_the_first_connection_is_a_database_error_and_passes(
    backend: str, flavour: str, database_url: URL
):
    engine = FlavouredEngine(flavour, database_url, **engine_options(backend))
    prepare_engine(backend, engine.sync_engine)
    dialect = engine.sync_engine.dialect
    dialect._get_server_version_info = _broken_version_query  # type: ignore[method-assign]
    try:
        with (
            engine.session() as session,
            pytest.raises(DatabaseError, match="TypeError while setting up a new"),
        ):
            engine.repository(session).count()
        assert dialect.server_version_info is None
        del dialect._get_server_version_info  # the server answers sensibly again
        with engine.session() as session:
            engine.repository(session).count()  # SQLAlchemy set the dialect up this time
        assert dialect.server_version_info is not None
    finally:
        engine.dispose()


@pytest.mark.not_on_fake(reason="it fails a real engine's new connections from its events")
def test_a_server_error_while_connecting_is_the_servers_error_with_its_code(
    backend: str, database_url: URL
):
    engine = create_test_engine(backend, database_url)

    @sqlalchemy.event.listens_for(engine, "connect")
    def _query_a_missing_table(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT * FROM no_such_table_here")
        finally:
            cursor.close()

    try:
        with pytest.raises(DatabaseError) as caught:
            engine.connect()
    finally:
        engine.dispose()
    expected = {"postgresql": "42P01", "mariadb": 1146, "sqlite": "SQLITE_ERROR"}[backend]
    assert (caught.value.code, caught.value.backend) == (expected, str(backend))


def test_a_connection_option_psycopg_does_not_know_is_a_configuration_error():
    require_target("postgresql")
    engine = userstore.create_engine(
        make_url(SERVER_URLS["postgresql"]).update_query_dict({"no_such_option": "1"})
    )
    try:
        with pytest.raises(ConfigurationError, match='invalid connection option "no_such_option"'):
            engine.connect()
    finally:
        engine.dispose()
