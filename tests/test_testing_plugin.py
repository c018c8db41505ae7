"""userstore.testing's pytest plugin, as an app's own test suite meets it.

Each test writes an app's test files and runs pytest on them in a subprocess (pytest's
``pytester``), with the plugin enabled as an app enables it, on the backend under test:
``--userstore-url`` names the server (any database on it); SQLite runs use the plugin's
default. Outcomes and messages are asserted on, and the server is checked afterwards for the
throwaway database the run made.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import NullPool, make_url

from tests.databases import BACKENDS, throwaway_database
from tests.test_readme import readme_blocks
from userstore.testing._throwaway import NAME_PREFIX, backend_of

PLUGIN = "userstore.testing"
# Where an app test writes the name of the database it ran on.
DATABASE_NOTE = "database-under-test.txt"

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

SYNC_APP_TESTS = f"""
from pathlib import Path

import pytest
from sqlalchemy import text

from userstore import DuplicateUserError, User, migrations, run_unit_of_work


def test_the_database_is_a_new_unicode_one_migrated_to_head(userstore_engine):
    Path({DATABASE_NOTE!r}).write_text(userstore_engine.url.database)
    with userstore_engine.connect() as connection:
        if userstore_engine.dialect.name == "postgresql":
            encoding = connection.execute(text(
                "SELECT pg_encoding_to_char(encoding) FROM pg_database "
                "WHERE datname = current_database()"
            )).scalar_one()
            assert encoding == "UTF8"
        elif userstore_engine.dialect.name != "sqlite":
            assert connection.execute(text("SELECT @@character_set_database")).scalar_one() == (
                "utf8mb4"
            )
    assert migrations.current(userstore_engine) == migrations.head()


def test_a_commit_is_seen_by_every_session_of_the_factory(user_repository, user_session_factory):
    assert user_repository.count() == 0
    user_repository.add(User(name="ann", number=1))
    user_repository.commit()

    with user_session_factory() as other:
        assert other.get(User, "ann").number == 1


def test_a_rollback_discards_only_what_came_after_the_last_commit(user_repository):
    assert user_repository.count() == 0
    user_repository.add(User(name="ann", number=1))
    user_repository.commit()
    user_repository.add(User(name="bob", number=2))
    user_repository.rollback()

    assert [user.name for user in user_repository.list()] == ["ann"]


def test_a_duplicate_rolls_back_its_unit_of_work_only(user_repository):
    assert user_repository.count() == 0
    user_repository.add_many([User(name="ann", number=1), User(name="bob", number=2)])
    user_repository.commit()
    user_repository.add(User(name="ann", number=3))
    with pytest.raises(DuplicateUserError):
        user_repository.commit()

    assert user_repository.get("ann").number == 1
    assert user_repository.count() == 2


def test_the_unit_of_work_runner_commits_inside_the_test_transaction(user_session_factory):
    added = run_unit_of_work(user_session_factory, lambda repo: repo.add(User(name="dan")))

    with user_session_factory() as session:
        assert session.get(User, added.name) is not None


def test_sessions_of_the_factory_commit_and_see_each_other(user_session_factory):
    with user_session_factory() as first, user_session_factory() as second:
        assert second.scalar(text("SELECT COUNT(*) FROM users")) == 0
        first.add(User(name="cid", number=3))
        first.commit()
        assert second.get(User, "cid") is not None
"""

ASYNC_APP_TESTS = """
import pytest
from sqlalchemy import func, select

from userstore import AsyncUserRepository, DuplicateUserError, User

pytestmark = pytest.mark.asyncio  # (needed in strict mode, harmless in auto mode)


async def test_an_async_commit_is_seen_by_another_session(
    async_user_repository, async_user_session_factory
):
    assert await async_user_repository.count() == 0
    await async_user_repository.add(User(name="ann", number=1))
    await async_user_repository.commit()

    async with async_user_session_factory() as other:
        assert (await AsyncUserRepository(other).get_one("ann")).number == 1


async def test_an_async_rollback_discards_only_what_came_after_the_last_commit(
    async_user_repository,
):
    assert await async_user_repository.count() == 0
    await async_user_repository.upsert_many([User(name="ann", number=1)])
    await async_user_repository.commit()
    await async_user_repository.add(User(name="ann", number=2))
    with pytest.raises(DuplicateUserError):
        await async_user_repository.commit()
    await async_user_repository.add(User(name="bob", number=2))
    await async_user_repository.rollback()

    assert [user.name async for user in async_user_repository.iter_all()] == ["ann"]


async def test_async_sessions_see_an_empty_table(async_user_session_factory):
    async with async_user_session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 0
        session.add(User(name="dee", number=4))
        await session.commit()
"""

FASTAPI_APP_TESTS = """
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI, HTTPException

from userstore import AsyncUserRepository, DuplicateUserError, User

pytestmark = pytest.mark.asyncio

app = FastAPI()


def session_factory():
    raise AssertionError("the app's own factory: the tests override it")


async def repository(factory=Depends(session_factory)) -> AsyncIterator[AsyncUserRepository]:
    async with factory() as session:
        yield AsyncUserRepository(session)


Repo = Annotated[AsyncUserRepository, Depends(repository)]


@app.post("/users/{name}", status_code=201)
async def add_user(name: str, number: int, repo: Repo) -> dict[str, object]:
    await repo.add(User(name=name, number=number))
    try:
        await repo.commit()
    except DuplicateUserError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"name": name, "number": number}


@app.get("/users/{name}")
async def get_user(name: str, repo: Repo) -> dict[str, object]:
    user = await repo.get(name)
    if user is None:
        raise HTTPException(404)
    return {"name": user.name, "number": user.number}


@pytest_asyncio.fixture
async def client(async_user_session_factory):
    app.dependency_overrides[session_factory] = lambda: async_user_session_factory
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        yield client
    app.dependency_overrides.clear()


async def test_a_user_posted_to_the_app_is_read_back_by_the_test(
    client, async_user_repository
):
    assert (await client.get("/users/eve")).status_code == 404
    assert (await client.post("/users/eve", params={"number": 5})).status_code == 201

    assert (await client.get("/users/eve")).json() == {"name": "eve", "number": 5}
    assert (await async_user_repository.get_one("eve")).number == 5


async def test_a_taken_name_is_a_409_and_the_first_user_stays(client):
    assert (await client.post("/users/eve", params={"number": 5})).status_code == 201
    assert (await client.post("/users/eve", params={"number": 6})).status_code == 409

    assert (await client.get("/users/eve")).json()["number"] == 5
"""

# Every file above, and how many tests each holds.
APP_TESTS = {
    "test_sync_app.py": (SYNC_APP_TESTS, 6),
    "test_async_app.py": (ASYNC_APP_TESTS, 3),
    "test_fastapi_app.py": (FASTAPI_APP_TESTS, 2),
}
REVERSE_ORDER = """
def pytest_collection_modifyitems(items):
    items.reverse()
"""

LEAKY_TESTS = f"""
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from userstore import User, migrations


def test_a_raw_commit_through_the_session_leaks(user_repository):
    user_repository.add(User(name="raw", number=1))
    user_repository.session.flush()
    user_repository.session.connection().exec_driver_sql("COMMIT")


@pytest.mark.asyncio
async def test_an_async_raw_commit_leaks(async_user_repository):
    await async_user_repository.add(User(name="async-raw", number=1))
    await async_user_repository.session.flush()
    await async_user_repository.session.execute(text("COMMIT"))


def test_a_commit_on_a_connection_of_its_own_leaks(user_repository, userstore_engine):
    with userstore_engine.begin() as connection:
        connection.execute(text("INSERT INTO users (name, number) VALUES ('own', 1)"))


def test_ddl_in_the_test_leaks_on_mariadb_only(user_repository):
    user_repository.add(User(name="ddl", number=1))
    user_repository.session.flush()
    user_repository.session.execute(text("CREATE TABLE leaky_table (id INTEGER PRIMARY KEY)"))


def test_migrating_userstore_down_leaks(userstore_engine):
    migrations.downgrade(userstore_engine, "0001_users")


def test_a_sync_test_cannot_use_the_async_fixtures(async_user_repository):
    pass


def test_the_next_test_starts_clean(user_repository, userstore_engine):
    Path({DATABASE_NOTE!r}).write_text(userstore_engine.url.database)
    migrations.assert_current(userstore_engine)
    assert user_repository.count() == 0
    assert "leaky_table" not in inspect(user_repository.session.connection()).get_table_names()


@pytest.mark.asyncio
async def test_the_next_async_test_starts_clean(async_user_repository):
    assert await async_user_repository.count() == 0
"""


@pytest.fixture(params=BACKENDS)
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """The ``--userstore-url`` of the backend under test: ``None`` for SQLite (the default).

    For a server, a database of tests/databases.py's (which skips, or fails when required, an
    unreachable server): the plugin connects to it only to make its own.
    """
    backend = str(request.param)
    with throwaway_database(backend, tmp_path / "server") as url:
        yield None if backend == "sqlite" else url.render_as_string(hide_password=False)


@pytest.fixture
def app_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An app's test directory, with pytest-asyncio in auto mode and warnings as errors."""
    monkeypatch.delenv("USERSTORE_TEST_DATABASE_URL", raising=False)
    # On CI (CI or BUILD_NUMBER set) pytest repeats each error's whole message in its short
    # summary; the tests count messages as a developer's run prints them.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    pytester.makeini(INI)
    return pytester


def _run(app_dir: pytest.Pytester, server_url: str | None, *args: str) -> pytest.RunResult:
    url_args = () if server_url is None else (f"--userstore-url={server_url}",)
    return app_dir.runpytest_subprocess("-p", PLUGIN, *url_args, *args)


def _server_has_database(server_url: str, name: str) -> bool:
    url = make_url(server_url)
    query = (
        "SELECT COUNT(*) FROM pg_database WHERE datname = :name"
        if url.get_backend_name() == "postgresql"
        else "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :name"
    )
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return bool(connection.execute(sqlalchemy.text(query), {"name": name}).scalar_one())
    finally:
        engine.dispose()


def _assert_dropped(app_dir: pytest.Pytester, server_url: str | None) -> None:
    """The database the app's tests noted down is gone (a file removed, a database dropped)."""
    name = (app_dir.path / DATABASE_NOTE).read_text()
    if server_url is None:
        assert Path(name).name == "userstore.db"
        assert not Path(name).exists()
    else:
        assert name.startswith(NAME_PREFIX)
        assert not _server_has_database(server_url, name)


def _write_app_tests(app_dir: pytest.Pytester) -> int:
    app_dir.makepyfile(**{name[:-3]: source for name, (source, _) in APP_TESTS.items()})
    return sum(count for _, count in APP_TESTS.values())


def test_what_app_tests_commit_is_gone_before_the_next_test_and_the_database_at_the_end(
    app_dir: pytest.Pytester, server_url: str | None
):
    tests = _write_app_tests(app_dir)

    result = _run(app_dir, server_url)

    result.assert_outcomes(passed=tests)
    _assert_dropped(app_dir, server_url)


def test_app_tests_pass_in_reverse_order_with_pytest_asyncio_in_strict_mode(
    app_dir: pytest.Pytester, server_url: str | None
):
    tests = _write_app_tests(app_dir)
    app_dir.makeconftest(REVERSE_ORDER)

    result = _run(app_dir, server_url, "-o", "asyncio_mode=strict", "-v")

    result.assert_outcomes(passed=tests)
    ran = re.findall(r"^(\S+::\S+) PASSED", result.stdout.str(), flags=re.MULTILINE)
    assert ran[0] == "test_sync_app.py::test_sessions_of_the_factory_commit_and_see_each_other"
    assert ran[-1] == "test_async_app.py::test_an_async_commit_is_seen_by_another_session"


def test_a_test_that_commits_for_real_fails_and_the_tests_after_it_start_clean(
    app_dir: pytest.Pytester, server_url: str | None
):
    app_dir.makepyfile(test_leaky=LEAKY_TESTS)
    mariadb = server_url is not None and backend_of(server_url) == "mariadb"

    result = _run(app_dir, server_url)

    leaks = 5 if mariadb else 4
    result.assert_outcomes(passed=7, errors=leaks + 1)
    output = result.stdout.str()
    assert output.count("userstore.testing: this test broke test isolation.") == leaks
    assert output.count("The database was put back as it was before the test") == leaks
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a_raw_commit_through_the_session_leaks*",
            "*It changed the database outside its transaction*",
            "  - table users held 0 rows, now 1",
            "Something committed for real: an explicit COMMIT, DDL on MariaDB*",
        ]
    )
    if mariadb:
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_ddl_in_the_test_leaks_on_mariadb_only*",
                "*It changed the database outside its transaction*",
                "  - table leaky_table was created",
                "  - table users held 0 rows, now 1",
            ]
        )
    result.stdout.fnmatch_lines(["ERROR test_leaky.py::test_a_commit_on_a_connection_of_its_own*"])
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_migrating_userstore_down_leaks*",
            "  - column users.created_at was dropped",
            "  - column users.updated_at was dropped",
            "  - rows of table userstore_alembic_version were changed",
            "*migrations*",
            "The database was put back as it was before the test, for the tests after it.",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_a_sync_test_cannot_use_the_async_fixtures*",
            "E * userstore.errors.ConfigurationError: userstore.testing: "
            "test_a_sync_test_cannot_use_the_async_fixtures is not an async test run by "
            "pytest-asyncio*",
        ]
    )
    _assert_dropped(app_dir, server_url)


WAITS_TO_BE_TERMINATED = f"""
import time
from pathlib import Path


def test_waits_to_be_terminated(user_repository, userstore_engine):
    Path({DATABASE_NOTE!r}).write_text(userstore_engine.url.database)
    time.sleep(60)
"""


def test_a_run_ended_by_sigterm_still_drops_its_database(
    app_dir: pytest.Pytester, server_url: str | None
):
    app_dir.makepyfile(test_slow=WAITS_TO_BE_TERMINATED)
    url_args = () if server_url is None else (f"--userstore-url={server_url}",)
    with subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", PLUGIN, *url_args],
        cwd=app_dir.path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        note = app_dir.path / DATABASE_NOTE
        deadline = time.monotonic() + 30
        while not note.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)

        process.send_signal(signal.SIGTERM)  # (as `timeout` or a CI runner cancelling a job)
        output, _ = process.communicate(timeout=30)

    assert b"KeyboardInterrupt: SIGTERM" in output
    _assert_dropped(app_dir, server_url)


SEEDING_CONFTEST = """
import pytest
from sqlalchemy import text


@pytest.fixture(scope="session", autouse=True)
def seed(userstore_engine):
    with userstore_engine.begin() as connection:
        connection.execute(text("INSERT INTO users (name, number) VALUES ('seed', 1)"))
"""

LEAKS_INTO_SEEDED_DATA = """
def test_a_committed_update_of_a_seeded_user_leaks(user_repository):
    connection = user_repository.session.connection()
    connection.exec_driver_sql("UPDATE users SET number = 2 WHERE name = 'seed'")
    connection.exec_driver_sql("COMMIT")


def test_a_committed_insert_beside_the_seed_leaks(user_repository):
    connection = user_repository.session.connection()
    connection.exec_driver_sql("INSERT INTO users (name, number) VALUES ('new', 3)")
    connection.exec_driver_sql("COMMIT")


def test_the_seed_is_back_as_it_was(user_repository):
    assert [(user.name, user.number) for user in user_repository.list()] == [("seed", 1)]
"""


def test_rows_an_app_seeded_before_the_tests_are_checked_and_put_back(
    app_dir: pytest.Pytester, server_url: str | None
):
    app_dir.makeconftest(SEEDING_CONFTEST)
    app_dir.makepyfile(test_seeded=LEAKS_INTO_SEEDED_DATA)

    result = _run(app_dir, server_url)

    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a_committed_update_of_a_seeded_user_leaks*",
            "  - rows of table users were changed",
            "*ERROR at teardown of test_a_committed_insert_beside_the_seed_leaks*",
            "  - table users held 1 rows, now 2",
        ]
    )


APP_SCHEMA_CONFTEST = """
import pytest
import sqlalchemy as sa

from userstore import migrations


def describe(engine):
    \"\"\"The database as a test would see it: tables, columns, indexes, keys, rows, revision.\"\"\"
    inspector = sa.inspect(engine)
    shape = {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted(index["name"] for index in inspector.get_indexes(table)),
            sorted(
                (tuple(key["constrained_columns"]), key["referred_table"])
                for key in inspector.get_foreign_keys(table)
            ),
        )
        for table in sorted(inspector.get_table_names())
    }
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.connect() as connection:
        rows = {
            name: sorted(map(repr, connection.execute(sa.select(table))))
            for name, table in metadata.tables.items()
        }
    return shape, rows, migrations.current(engine)


@pytest.fixture(scope="session", autouse=True)
def set_up(userstore_engine):
    \"\"\"The app's own setup: a table referencing users, an index, a user and a note.\"\"\"
    metadata = sa.MetaData()
    users = sa.Table("users", metadata, autoload_with=userstore_engine)
    notes = sa.Table(
        "notes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_name", users.c.name.type, sa.ForeignKey("users.name"), nullable=False),
        sa.Column("body", sa.String(100), index=True),
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
        mariadb_collate="utf8mb4_nopad_bin",  # (users.name's: a foreign key needs the same)
    )
    with userstore_engine.begin() as connection:
        notes.create(connection)
        connection.execute(users.insert().values(name="seed", number=1))
        connection.execute(notes.insert().values(id=1, user_name="seed", body="hello"))
    return describe(userstore_engine)


@pytest.fixture
def as_set_up(set_up, userstore_engine):
    return lambda: describe(userstore_engine) == set_up
"""

SCHEMA_LEAKS = """
import sqlalchemy as sa

from userstore import User, migrations

LEFT_OPEN = []


def test_01_alters_users_on_a_connection_of_its_own(userstore_engine):
    with userstore_engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE users ADD COLUMN extra INT NULL"))


def test_02_runs_on_the_database_as_set_up(as_set_up):
    assert as_set_up()


def test_03_creates_an_index_and_a_table_on_a_connection_of_its_own(userstore_engine):
    with userstore_engine.begin() as connection:
        connection.execute(sa.text("CREATE INDEX ix_users_number ON users (number)"))
        connection.execute(sa.text("CREATE TABLE scratch (id INT)"))


def test_04_runs_on_the_database_as_set_up(as_set_up):
    assert as_set_up()


def test_05_drops_a_column_of_users(userstore_engine):
    with userstore_engine.begin() as connection:
        on_notes = " ON notes" if connection.dialect.name == "mariadb" else ""
        connection.execute(sa.text(f"DROP INDEX ix_notes_body{on_notes}"))
        connection.execute(sa.text("ALTER TABLE users DROP COLUMN updated_at"))


def test_06_runs_on_the_database_as_set_up(as_set_up, userstore_engine):
    migrations.assert_current(userstore_engine)
    assert as_set_up()


def test_07_drops_the_apps_table_and_changes_the_seed(userstore_engine):
    with userstore_engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE notes"))
        connection.execute(sa.text("UPDATE users SET number = 2 WHERE name = 'seed'"))


def test_08_runs_on_the_database_as_set_up(as_set_up, user_repository):
    assert as_set_up()
    assert user_repository.get_one("seed").number == 1


def test_09_ddl_through_its_session_leaks_on_mariadb_only(user_repository):
    session = user_repository.session
    session.execute(sa.text("CREATE TABLE scratch (id INT)"))
    session.execute(sa.text("ALTER TABLE users ADD COLUMN extra INT NULL"))
    session.execute(sa.text("CREATE INDEX ix_users_number ON users (number)"))


def test_10_runs_on_the_database_as_set_up(as_set_up):
    assert as_set_up()


def test_11_leaves_a_transaction_open_on_a_connection_of_its_own(userstore_engine):
    connection = userstore_engine.connect()
    connection.execute(sa.text("INSERT INTO users (name) VALUES ('ada')"))
    LEFT_OPEN.append(connection)


def test_12_writes_the_same_name_without_waiting(user_repository):
    user_repository.add(User(name="ada"))
    user_repository.commit()
"""

# PostgreSQL: a schema of the app's, committed.
SCHEMA_OF_ITS_OWN = """
import sqlalchemy as sa


def test_commits_a_schema_a_table_and_rows(userstore_engine):
    with userstore_engine.begin() as connection:
        connection.execute(sa.text("CREATE SCHEMA app"))
        connection.execute(sa.text("CREATE TABLE app.audit (id int)"))
        connection.execute(sa.text("INSERT INTO app.audit VALUES (1)"))


def test_the_schema_is_gone(as_set_up, userstore_engine):
    assert "app" not in sa.inspect(userstore_engine).get_schema_names()
    assert as_set_up()
"""

# SQLite (the default URL names the throwaway file): a test that asks for the URL only.
ENGINE_OF_ITS_OWN = """
import sqlalchemy as sa


def test_writes_through_an_engine_of_its_own(userstore_url):
    engine = sa.create_engine(userstore_url)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO users (name) VALUES ('own')"))
    engine.dispose()


def test_the_row_is_gone(as_set_up):
    assert as_set_up()
"""

BROKE_ISOLATION = "userstore.testing: this test broke test isolation."
PUT_BACK = "The database was put back as it was before the test, for the tests after it."


def test_committed_schema_changes_are_reported_and_undone_and_later_tests_find_the_apps_setup(
    app_dir: pytest.Pytester, server_url: str | None
):
    backend = "sqlite" if server_url is None else backend_of(server_url)
    app_dir.makeconftest(APP_SCHEMA_CONFTEST)
    app_dir.makepyfile(test_schema_leaks=SCHEMA_LEAKS)
    extra = {"postgresql": SCHEMA_OF_ITS_OWN, "sqlite": ENGINE_OF_ITS_OWN}.get(backend)
    if extra is not None:
        app_dir.makepyfile(test_extra=extra)

    result = _run(app_dir, server_url)

    # Every leaky test errors at teardown; the tests after it pass, but on SQLite, where the
    # plugin cannot end the transaction test_11 leaves open, test_12 errors at setup instead.
    leaks = 5 + (backend == "mariadb") + (extra is not None)
    blocked = backend == "sqlite"
    result.assert_outcomes(passed=12 - blocked + 2 * (extra is not None), errors=leaks + blocked)
    output = result.stdout.str()
    assert output.count(BROKE_ISOLATION) == leaks
    assert output.count(PUT_BACK) == leaks - 1  # (test_11's leaves nothing to put back)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_01_alters_users_on_a_connection_of_its_own*",
            "  - column users.extra was created",
            "Something committed for real: an explicit COMMIT, DDL on MariaDB*migrations*",
            PUT_BACK,
            "*ERROR at teardown of test_03_creates_an_index_and_a_table_on_*",
            "  - table scratch was created",
            "  - index users.ix_users_number was created",
            "*ERROR at teardown of test_05_drops_a_column_of_users*",
            "  - column users.updated_at was dropped",
            "  - index notes.ix_notes_body was dropped",
            "*ERROR at teardown of test_07_drops_the_apps_table_and_changes_the_seed*",
            "  - table notes was dropped",
            "  - rows of table users were changed",
            "*ERROR at teardown of test_11_leaves_a_transaction_open_on_a_connection_of_its_own*",
            "It left a transaction open on a connection of its own*",
        ]
    )
    if backend == "mariadb":
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_09_ddl_through_its_session_leaks_on_mariadb_only*",
                "  - table scratch was created",
                "  - column users.extra was created",
                "  - index users.ix_users_number was created",
            ]
        )
    if backend == "sqlite":
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_writes_through_an_engine_of_its_own*",
                "  - table users held 1 rows, now 2",
            ]
        )
        result.stdout.fnmatch_lines(
            [
                "SQLite: the plugin cannot end it*",
                "*ERROR at setup of test_12_writes_the_same_name_without_waiting*",
                "userstore.testing: the test database is still locked by the transaction "
                "test_schema_leaks.py::test_11_leaves_a_transaction_open_* left open*",
            ]
        )
    else:
        result.stdout.fnmatch_lines(["The plugin ended that connection."])
    if backend == "postgresql":
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_commits_a_schema_a_table_and_rows*",
                "  - schema app was created",
            ]
        )


BIG_TABLE_CONFTEST = """
import pytest
import sqlalchemy as sa


@pytest.fixture(scope="session")
def big_table(userstore_engine):
    with userstore_engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE big (id INTEGER PRIMARY KEY)"))
        connection.execute(
            sa.text("INSERT INTO big (id) VALUES (:id)"), [{"id": i} for i in range(10_001)]
        )
"""

CHANGES_A_BIG_TABLE = """
import sqlalchemy as sa


def test_1_deletes_a_row_of_a_big_table(big_table, userstore_engine):
    with userstore_engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM big WHERE id = 0"))


def test_2_would_run_on_a_changed_database(big_table, user_repository):
    pass


def test_3_needs_no_database():
    pass
"""


def test_a_database_that_cannot_be_put_back_fails_every_later_test_that_uses_it(
    app_dir: pytest.Pytester,
):
    # (SQLite only: what is put back and how it is checked is the same on every backend.)
    app_dir.makeconftest(BIG_TABLE_CONFTEST)
    app_dir.makepyfile(test_big=CHANGES_A_BIG_TABLE)

    result = app_dir.runpytest_subprocess("-p", PLUGIN)

    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_1_deletes_a_row_of_a_big_table*",
            "  - table big held 10001 rows, now 10000",
            "Putting the database back failed (table big held 10001 rows, now 10000): every "
            "later test that uses the database fails.",
            "*ERROR at setup of test_2_would_run_on_a_changed_database*",
            "userstore.testing: the test database could not be put back after "
            "test_big.py::test_1_deletes_a_row_of_a_big_table changed it outside its "
            "transaction (table big held 10001 rows, now 10000); this test would run on a "
            "changed database.",
        ]
    )


def test_the_sync_fixtures_work_without_pytest_asyncio_and_the_async_ones_say_it_is_missing(
    app_dir: pytest.Pytester,
):
    # pytest-asyncio is installed here: its plugin is left out and its import made to fail.
    app_dir.makeini("[pytest]\nfilterwarnings = error\n")
    app_dir.makepyfile(block_pytest_asyncio="import sys\nsys.modules['pytest_asyncio'] = None\n")
    app_dir.makepyfile(
        test_app=textwrap.dedent(
            """
            def test_the_sync_repository_works(user_repository):
                assert user_repository.count() == 0

            def test_the_async_repository_needs_pytest_asyncio(async_user_repository):
                pass
            """
        )
    )

    result = app_dir.runpytest_subprocess(
        "-p", "no:asyncio", "-p", "block_pytest_asyncio", "-p", PLUGIN
    )

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*async fixtures run on pytest-asyncio, which is not installed: "
            "pip install pytest-asyncio"
        ]
    )


def test_an_app_conftest_may_import_the_fake_before_it_enables_the_plugin(
    app_dir: pytest.Pytester,
):
    # pytest warns when a plugin module was imported before it could rewrite its asserts,
    # unless the module says it has none to rewrite.
    app_dir.makeconftest(
        "from userstore.testing import InMemoryUserStore\n\n"
        'pytest_plugins = ["userstore.testing"]\n'
    )
    app_dir.makepyfile(
        test_app="def test_it(user_repository):\n    assert user_repository.count() == 0\n"
    )

    result = app_dir.runpytest_subprocess()

    result.assert_outcomes(passed=1)


def test_a_url_that_is_no_database_url_fails_the_tests_that_use_the_database(
    app_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("USERSTORE_TEST_DATABASE_URL", "oracle://scott@db/test")
    app_dir.makepyfile(test_app="def test_it(user_repository):\n    pass\n")

    result = app_dir.runpytest_subprocess("-p", PLUGIN)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*USERSTORE_TEST_DATABASE_URL is not a usable database URL: *'oracle' is none of them"]
    )


def test_the_command_line_url_wins_over_the_environment(
    app_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("USERSTORE_TEST_DATABASE_URL", "oracle://scott@db/test")
    app_dir.makepyfile(
        test_app="def test_it(user_repository):\n    assert user_repository.count() == 0\n"
    )

    result = app_dir.runpytest_subprocess("-p", PLUGIN, "--userstore-url=sqlite://")

    result.assert_outcomes(passed=1)


def test_the_readme_testing_section_runs_as_an_app_test_suite(
    pytester: pytest.Pytester, server_url: str | None, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("USERSTORE_TEST_DATABASE_URL", raising=False)
    (pyproject,) = readme_blocks("toml", "Testing your app")
    (app,) = readme_blocks("python", "In a FastAPI app")
    files = {"app.py": app, "pyproject.toml": pyproject}
    for block in readme_blocks("python", "Testing your app"):
        name = re.match(r"# (\S+\.py)", block)
        assert name, f"a README block of Testing your app names no file: {block[:60]!r}"
        files[name.group(1)] = block
    for name, source in files.items():
        (pytester.path / name).write_text(source)

    if server_url is not None:  # named by the environment here, as CI would
        monkeypatch.setenv("USERSTORE_TEST_DATABASE_URL", server_url)
    result = pytester.runpytest_subprocess("-W", "error")

    result.assert_outcomes(passed=5)
