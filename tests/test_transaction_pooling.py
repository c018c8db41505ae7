"""``transaction_pooling=True``: userstore behind PgBouncer in transaction mode.

PgBouncer (the ``pgbouncer`` target, tests/clusters.py) gives a client a server
connection for one transaction at a time. These tests show that the setting is
needed (a repeated query fails without it), that with it nothing of userstore's
outlives a transaction on a server connection, and that migrations serialize
and COPY works through PgBouncer. The whole contract suite also runs through
PgBouncer (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import sqlalchemy
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, make_url, text

import userstore
from tests.cli_support import one_error_line
from tests.databases import (
    CONTRACT_TARGETS,
    SERVER_URLS,
    direct_url,
    migrated_database,
    require_target,
    throwaway_database,
)
from tests.flavours import FlavouredEngine
from userstore import ConfigurationError, User, UserStoreError, bulk, cli, migrations
from userstore.cli import app as cli_app
from userstore.migration_env import POSTGRESQL_LOCK_KEY

PGBOUNCER: Final = CONTRACT_TARGETS["pgbouncer"]
# (flavour, driver): the async flavour's default asyncpg, and psycopg's async connection.
DRIVERS: Final = [("sync", "psycopg"), ("async", "asyncpg"), ("async", "psycopg_async")]


def _url(url: URL, driver: str) -> URL:
    return url.set(drivername=f"postgresql+{driver}")


@pytest.fixture
def pgbouncer_url(tmp_path: Path) -> Iterator[URL]:
    """A migrated database of its own, reached through PgBouncer (a pool of its own there)."""
    with migrated_database(PGBOUNCER, tmp_path) as url:
        yield url


@pytest.fixture
def primary(pgbouncer_url: URL) -> Iterator[Engine]:
    """A plain engine on the same database on the PostgreSQL primary, bypassing PgBouncer."""
    engine = sqlalchemy.create_engine(
        direct_url(PGBOUNCER, pgbouncer_url), poolclass=sqlalchemy.NullPool
    )
    yield engine
    engine.dispose()


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(
    "url", ["sqlite://", "mariadb+pymysql://root@127.0.0.1:3306/test"], ids=["sqlite", "mariadb"]
)
def test_transaction_pooling_is_refused_off_postgresql_before_anything_connects(
    url: str, flavour: str
):
    create = userstore.create_engine if flavour == "sync" else userstore.create_async_engine

    with pytest.raises(ConfigurationError, match="is for PostgreSQL behind PgBouncer"):
        create(url, transaction_pooling=True)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_transaction_pooling_must_be_true_or_false(value: object):
    with pytest.raises(ConfigurationError, match="transaction_pooling must be True or False"):
        userstore.create_engine("postgresql://postgres@127.0.0.1:6441/x", transaction_pooling=value)


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(
    "url",
    ["sqlite://", "mariadb+pymysql://root@127.0.0.1:3306/test", "postgresql://postgres@/test"],
    ids=["sqlite", "mariadb", "postgresql"],
)
def test_transaction_pooling_false_is_accepted_everywhere(url: str, flavour: str):
    engine = FlavouredEngine(flavour, url, transaction_pooling=False)
    engine.dispose()


def _driver_connection(engine: FlavouredEngine) -> Any:
    with engine.connect() as connection:
        return connection.connection.driver_connection


def test_psycopg_never_prepares_with_transaction_pooling_and_other_connect_args_still_apply(
    pgbouncer_url: URL,
):
    pooled = FlavouredEngine("sync", pgbouncer_url, transaction_pooling=True)
    default = FlavouredEngine("sync", direct_url(PGBOUNCER, pgbouncer_url))
    own = FlavouredEngine(
        "sync",
        pgbouncer_url,
        transaction_pooling=True,
        connect_args={"prepare_threshold": None, "application_name": "mine"},
    )
    try:
        assert _driver_connection(pooled).prepare_threshold is None
        assert _driver_connection(default).prepare_threshold == 5  # psycopg's own default
        assert _driver_connection(own).prepare_threshold is None
        assert _driver_connection(own).info.parameter_status("application_name") == "mine"
    finally:
        for engine in (pooled, default, own):
            engine.dispose()


def _read_repeatedly(first: FlavouredEngine, second: FlavouredEngine, rounds: int) -> None:
    """Read a user through ``first`` many times, each read a unit of work of its own.

    Then, while ``second`` holds a transaction open on the server connection
    those reads used last (PgBouncer hands out the most recently used one),
    read once more: that read runs on another server connection.
    """
    for _ in range(rounds):
        with first.session() as session:
            repo = first.repository(session)
            assert repo.get("nobody") is None
            repo.commit()  # (a rollback would make psycopg forget what it prepared)
    with second.session() as holder:
        holder.execute(text("SELECT 1"))
        with first.session() as session:
            assert first.repository(session).get("nobody") is None


@pytest.mark.parametrize(("flavour", "driver"), DRIVERS[:2])
def test_without_transaction_pooling_a_repeated_query_through_pgbouncer_fails(
    pgbouncer_url: URL, flavour: str, driver: str
):
    url = _url(pgbouncer_url, driver)
    first, second = FlavouredEngine(flavour, url), FlavouredEngine(flavour, url)
    try:
        # psycopg prepares the read on its sixth run; asyncpg (through SQLAlchemy)
        # prepares every statement and keeps it, by a name each client numbers alike.
        with pytest.raises(UserStoreError, match="prepared statement"):
            _read_repeatedly(first, second, rounds=8)
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.parametrize(("flavour", "driver"), DRIVERS)
def test_with_transaction_pooling_the_same_reads_never_fail(
    pgbouncer_url: URL, flavour: str, driver: str
):
    url = _url(pgbouncer_url, driver)
    first = FlavouredEngine(flavour, url, transaction_pooling=True)
    second = FlavouredEngine(flavour, url, transaction_pooling=True)
    try:
        for _ in range(5):
            _read_repeatedly(first, second, rounds=8)
    finally:
        first.dispose()
        second.dispose()


def _every_verb(repo: Any, worker: int, rounds: int) -> None:
    """A unit of work per round that uses every verb of the repository, COPY included."""
    for round_ in range(rounds):
        name = f"w{worker}-{round_:03d}"
        repo.add(User(name=name, number=round_))
        repo.add_many([(f"{name}-bulk{i}", i) for i in range(3)])
        repo.commit()
        assert repo.get_one(name).number == round_
        assert repo.exists(name)
        assert repo.count() >= 4
        repo.upsert(name, round_ + 1)
        repo.upsert_many([(f"{name}-bulk0", None), (f"{name}-new", 7)])
        assert [user.name for user in repo.list(after=name, limit=2)] == [
            f"{name}-bulk0",
            f"{name}-bulk1",
        ]
        assert sum(1 for _ in repo.iter_all(batch_size=3)) >= 5
        repo.delete(f"{name}-bulk2")
        repo.commit()
        repo.add(User(name=f"{name}-gone", number=None))
        repo.rollback()


# What PgBouncer itself sets on a server connection to match its client's
# startup parameters: its business, not userstore's.
_PGBOUNCER_TRACKED: Final = (
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
)
_SESSION_STATE: Final = text(
    "SELECT pg_backend_pid() AS pid,"
    " (SELECT count(*) FROM pg_prepared_statements) AS prepared,"
    " (SELECT count(*) FROM pg_cursors WHERE is_holdable) AS cursors,"
    " (SELECT count(*) FROM pg_listening_channels()) AS listening,"
    " (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM pg_settings"
    "  WHERE source = 'session' AND setting IS DISTINCT FROM reset_val"
    "  AND name <> ALL(:tracked)) AS session_settings"
)


_ADVISORY_LOCKS: Final = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_TEMPORARY_TABLES: Final = text("SELECT count(*) FROM pg_class WHERE relpersistence = 't'")


def _state_of_every_server_connection(pgbouncer_url: URL, primary: Engine) -> list[Any]:
    """What each of PgBouncer's server connections to the database holds beyond transactions.

    As many transactions as PgBouncer has server connections are opened at
    once through it, so each runs on a different one and reads that
    connection's own state: prepared statements, cursors WITH HOLD, LISTEN,
    and settings a session changed (``SET`` without ``LOCAL``) and left
    different from what ``RESET`` gives. (asyncpg's type introspection turns
    ``jit`` off for a session and back, inside the unit of work: it leaves the
    value as it found it.)
    """
    with primary.connect() as connection:
        servers = set(
            connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
        )
    assert servers, "the workload left PgBouncer no server connection to look at"
    probe = sqlalchemy.create_engine(
        pgbouncer_url, poolclass=sqlalchemy.NullPool, connect_args={"prepare_threshold": None}
    )
    try:
        connections = [probe.connect() for _ in servers]
        try:
            states = [
                connection.execute(_SESSION_STATE, {"tracked": list(_PGBOUNCER_TRACKED)}).one()
                for connection in connections
            ]
        finally:
            for connection in connections:
                connection.close()
    finally:
        probe.dispose()
    assert servers <= {state.pid for state in states}
    return states


@pytest.mark.parametrize(("flavour", "driver"), DRIVERS)
def test_userstore_leaves_nothing_on_pgbouncers_server_connections_beyond_a_transaction(
    pgbouncer_url: URL, primary: Engine, flavour: str, driver: str
):
    engine = FlavouredEngine(flavour, _url(pgbouncer_url, driver), transaction_pooling=True)
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        try:
            with engine.session() as session:
                _every_verb(engine.repository(session), number, rounds=15)
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        migrator = userstore.create_engine(pgbouncer_url, transaction_pooling=True)
        try:
            migrations.upgrade(migrator)  # nothing to do, after taking the migration lock
        finally:
            migrator.dispose()
    finally:
        engine.dispose()

    states = _state_of_every_server_connection(pgbouncer_url, primary)
    assert [(s.prepared, s.cursors, s.listening, s.session_settings) for s in states] == [
        (0, 0, 0, [])
    ] * len(states)
    with primary.connect() as connection:
        assert connection.execute(_ADVISORY_LOCKS).scalar() == 0
        assert connection.execute(_TEMPORARY_TABLES).scalar() == 0
        stored = connection.execute(text("SELECT count(*) FROM users")).scalar()
    assert stored == 6 * 15 * 4  # each round keeps 4 users


def _count_calls(function: Callable[..., Any], calls: list[int]) -> Callable[..., Any]:
    def counted(*args: Any) -> Any:
        calls.append(1)
        return function(*args)

    return counted


@pytest.mark.parametrize(("flavour", "driver"), DRIVERS)
def test_add_many_copies_through_pgbouncer(
    pgbouncer_url: URL,
    primary: Engine,
    flavour: str,
    driver: str,
    monkeypatch: pytest.MonkeyPatch,
):
    copies: list[int] = []
    for key, copy in list(bulk._COPY_BY_DRIVER.items()):
        monkeypatch.setitem(bulk._COPY_BY_DRIVER, key, _count_calls(copy, copies))
    engine = FlavouredEngine(flavour, _url(pgbouncer_url, driver), transaction_pooling=True)
    try:
        for unit in range(3):
            with engine.session() as session:
                repo = engine.repository(session)
                rows = ((f"u{unit}-{i:05d}", i) for i in range(2_500))
                assert repo.add_many(rows, batch_size=1_000) == 2_500
                repo.commit()
    finally:
        engine.dispose()

    assert len(copies) == 3 * 3
    with primary.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM users")).scalar() == 7_500


class _Upgrades(logging.Handler):
    """Alembic's "Running upgrade ..." lines, as this process's migration logged them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Running upgrade"):
            self.lines.append(record.getMessage())


def _upgrade_through_pgbouncer(url: str, flavour: str, results: multiprocessing.Queue) -> None:
    """Migrate ``url`` to head as an app would at start-up; report what this process ran."""
    upgrades = _Upgrades()
    logger = logging.getLogger("alembic.runtime.migration")
    logger.setLevel(logging.INFO)
    logger.addHandler(upgrades)
    try:
        if flavour == "sync":
            engine = userstore.create_engine(url, transaction_pooling=True)
            try:
                migrations.upgrade(engine)
            finally:
                engine.dispose()
        else:

            async def upgrade() -> None:
                engine = userstore.create_async_engine(url, transaction_pooling=True)
                try:
                    await migrations.upgrade_async(engine)
                finally:
                    await engine.dispose()

            asyncio.run(upgrade())
        results.put((flavour, upgrades.lines, None))
    except BaseException as exc:  # reported to the test
        results.put((flavour, upgrades.lines, f"{type(exc).__name__}: {exc}"))


_WAITING_FOR_THE_MIGRATION_LOCK: Final = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def test_concurrent_upgrades_through_pgbouncer_serialize_one_migrates_the_others_find_nothing(
    tmp_path: Path,
):
    processes = ["sync", "sync", "async", "async"]
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    with throwaway_database(PGBOUNCER, tmp_path) as url:
        primary = sqlalchemy.create_engine(
            direct_url(PGBOUNCER, url), poolclass=sqlalchemy.NullPool
        )
        rendered = url.render_as_string(hide_password=False)
        workers = [
            spawn.Process(target=_upgrade_through_pgbouncer, args=(rendered, flavour, results))
            for flavour in processes
        ]
        try:
            with primary.connect() as holder:
                # The test holds the migration lock until every process waits for it,
                # each in a transaction on a server connection of its own.
                holder.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRESQL_LOCK_KEY}
                )
                for worker in workers:
                    worker.start()
                _wait_for(
                    lambda: (
                        _waiting(primary) == len(workers)
                        or not all(worker.is_alive() for worker in workers)
                    ),
                    seconds=120,
                )
                holder.rollback()
            outcomes = [results.get(timeout=120) for _ in workers]
        finally:
            for worker in workers:
                worker.join(60)
        assert [error for _, _, error in outcomes] == [None] * len(workers)
        assert [worker.exitcode for worker in workers] == [0] * len(workers)
        assert migrations.current(direct_url(PGBOUNCER, url)) == migrations.head()
        with primary.connect() as connection:  # and no one still holds the lock
            assert connection.execute(_ADVISORY_LOCKS).scalar() == 0
        primary.dispose()

    revisions = list(ScriptDirectory(str(migrations.script_location())).walk_revisions())
    ran = sorted(len(lines) for _, lines, _ in outcomes)
    assert ran == [0] * (len(workers) - 1) + [len(revisions)]  # one migrated, once each


def _waiting(primary: Engine) -> int:
    with primary.connect() as connection:
        return int(connection.execute(_WAITING_FOR_THE_MIGRATION_LOCK).scalar_one())


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("url", "connect_args"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:6441/test", {"prepare_threshold": 5}),
        ("postgresql+asyncpg://postgres@127.0.0.1:6441/test", {"statement_cache_size": 100}),
        ("postgresql+asyncpg://postgres@127.0.0.1:6441/test", {"prepared_statement_cache_size": 9}),
    ],
    ids=["psycopg prepare_threshold", "asyncpg statement cache", "sqlalchemy statement cache"],
)
def test_connect_args_that_would_undo_transaction_pooling_are_refused(
    url: str, connect_args: dict[str, object]
) -> None:
    from userstore.asyncio import create_async_engine

    make = create_async_engine if "asyncpg" in url else userstore.create_engine
    with pytest.raises(userstore.ConfigurationError, match="transaction_pooling=True needs"):
        make(url, transaction_pooling=True, connect_args=connect_args)  # type: ignore[operator]


# -- the command line -------------------------------------------------------------------


def test_the_command_line_refuses_transaction_pooling_off_postgresql_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'users.db'}"
    assert cli.main(["--url", url, "--transaction-pooling", "upgrade"]) == 2
    assert "is for PostgreSQL behind PgBouncer" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "users.db").exists()  # refused before anything connected


def test_the_command_lines_transaction_pooling_reaches_the_driver(
    pgbouncer_url: URL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    thresholds: list[object] = []

    def create_engine(url: Any, **kwargs: Any) -> Engine:
        engine = userstore.create_engine(url, **kwargs)
        with engine.connect() as connection:
            thresholds.append(connection.connection.driver_connection.prepare_threshold)
        return engine

    monkeypatch.setattr(cli_app, "create_engine", create_engine)
    url = pgbouncer_url.render_as_string(hide_password=False)
    assert cli.main(["--url", url, "users", "count"]) == 0
    assert cli.main(["users", "count", "--url", url, "--transaction-pooling"]) == 0
    assert cli.main(["--transaction-pooling", "users", "count", "--url", url]) == 0
    assert thresholds == [5, None, None]
    assert capsys.readouterr().out == "0\n0\n0\n"


def test_the_command_line_imports_exports_and_reads_through_pgbouncer_with_transaction_pooling(
    pgbouncer_url: URL, primary: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = pgbouncer_url.render_as_string(hide_password=False)
    source = tmp_path / "in.csv"
    source.write_text("name,number\n" + "".join(f"u{i:05d},{i}\n" for i in range(5_000)))
    exported = tmp_path / "out.csv"

    def run(*argv: str) -> str:
        capsys.readouterr()
        assert cli.main(["--url", url, "--transaction-pooling", "--quiet", *argv]) == 0
        return capsys.readouterr().out

    run("upgrade")
    run("import", str(source), "--batch-size", "500")
    for i in range(0, 5_000, 250):  # the same read, one process, many transactions
        assert run("users", "get", f"u{i:05d}", "--json").count(f'"number": {i}') == 1
    assert run("users", "count") == "5000\n"
    run("export", str(exported), "--batch-size", "300")
    assert exported.read_text().splitlines()[1:] == source.read_text().splitlines()[1:]
    with primary.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM users")).scalar() == 5_000


# -- prepare_threshold in a URL -----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"), [("0", 0), ("12", 12), ("None", None), ("none", None), ("", None)]
)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_prepare_threshold_in_the_url_reaches_psycopg_as_a_number(
    given: str, expected: int | None, flavour: str
):
    require_target("postgresql")
    url = make_url(SERVER_URLS["postgresql"]).update_query_dict({"prepare_threshold": given})
    if flavour == "async":
        url = _url(url, "psycopg_async")
    engine = FlavouredEngine(flavour, url)
    try:
        with engine.connect() as connection:
            raw = connection.get_raw_connection() if flavour == "async" else connection.connection
            assert raw.driver_connection.prepare_threshold == expected
            for _ in range(3):  # prepared on the server from the first run when 0
                assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize("given", ["abc", "1.5", "0x10", "9" * 12])
def test_a_prepare_threshold_in_the_url_that_is_no_whole_number_is_refused(
    given: str, capsys: pytest.CaptureFixture[str]
):
    url = f"postgresql://postgres@127.0.0.1:1/test?prepare_threshold={given}"
    with pytest.raises(ConfigurationError, match="must be a whole number or None"):
        userstore.create_engine(url)
    assert cli.main(["--url", url, "users", "count"]) == 2
    assert "must be a whole number or None" in one_error_line(capsys.readouterr().err)


def test_a_prepare_threshold_in_the_url_that_undoes_transaction_pooling_is_refused():
    url = "postgresql://postgres@127.0.0.1:1/test?prepare_threshold=0"
    with pytest.raises(ConfigurationError, match="needs prepare_threshold=None; the URL or"):
        userstore.create_engine(url, transaction_pooling=True)
    engine = userstore.create_engine(
        "postgresql://postgres@127.0.0.1:1/test?prepare_threshold=none", transaction_pooling=True
    )
    engine.dispose()
