"""SQLite: readers never wait, writers never lose, and in-memory databases are safe.

File databases run deferred transactions in WAL mode. Blocking is detected
without timing anything: the sessions that must not wait get a busy timeout
of a fraction of a second, so a wait would surface as an error.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import URL, Engine, event, text
from sqlalchemy.orm import Session

import userstore
from tests.databases import migrated_database
from userstore import (
    ConfigurationError,
    DatabaseError,
    TransientDatabaseError,
    User,
    UserRepository,
    create_session_factory,
    migrations,
)

IMPATIENT = {"connect_args": {"timeout": 0.25}}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[URL]:
    with migrated_database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def engines(sqlite_url: URL) -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def _repo(engines: list[Engine], url: URL, **options: object) -> UserRepository:
    engine = userstore.create_engine(url, **options)
    engines.append(engine)
    return UserRepository(create_session_factory(engine)())


def test_an_open_reader_blocks_neither_another_reader_nor_a_writer(
    sqlite_url: URL, engines: list[Engine]
):
    forgotten = _repo(engines, sqlite_url)
    assert forgotten.count() == 0  # a read transaction, left open

    reader = _repo(engines, sqlite_url, **IMPATIENT)
    writer = _repo(engines, sqlite_url, **IMPATIENT)
    assert reader.count() == 0
    for number in range(20):
        writer.add(User(name=f"w{number}", number=number))
        writer.commit()
    assert reader.list() == []  # still its own snapshot: a unit of work is isolated
    reader.commit()
    assert reader.count() == 20
    assert forgotten.count() == 0  # and the forgotten one still sees its own


def test_a_writer_in_progress_blocks_no_reader(sqlite_url: URL, engines: list[Engine]):
    writer = _repo(engines, sqlite_url)
    writer.add(User(name="pending", number=1))
    writer.count()  # flushed: this unit of work holds the write lock

    reader = _repo(engines, sqlite_url, **IMPATIENT)
    assert reader.exists("pending") is False
    assert reader.list() == []
    writer.commit()
    reader.commit()
    assert reader.exists("pending") is True


def test_a_unit_of_work_that_reads_then_writes_on_a_stale_snapshot_fails_whole_and_retries(
    sqlite_url: URL, engines: list[Engine]
):
    slow = _repo(engines, sqlite_url)
    fast = _repo(engines, sqlite_url)
    counted = slow.count()  # the snapshot
    fast.add(User(name="fast", number=1))
    fast.commit()
    slow.add(User(name="slow", number=counted))

    with pytest.raises(TransientDatabaseError):
        slow.commit()

    checker = _repo(engines, sqlite_url)
    assert [u.name for u in checker.list()] == ["fast"]  # nothing of the failed unit
    checker.commit()
    # Retried whole, it sees the other writer's user and commits.
    slow.add(User(name="slow", number=slow.count()))
    slow.commit()
    assert [(u.name, u.number) for u in checker.list()] == [("fast", 1), ("slow", 1)]


def test_delete_waits_for_the_write_lock_instead_of_failing(sqlite_url: URL, engines: list[Engine]):
    setup = _repo(engines, sqlite_url)
    setup.add(User(name="doomed", number=1))
    setup.commit()
    holder = _repo(engines, sqlite_url)
    holder.add(User(name="holder", number=1))
    holder.count()  # holds the write lock
    deleter = _repo(engines, sqlite_url)
    done = threading.Event()
    errors: list[BaseException] = []

    def delete() -> None:
        try:
            deleter.delete("doomed")
            deleter.commit()
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=delete)
    thread.start()
    assert not done.wait(0.3)  # waiting for the lock, not failed
    holder.commit()
    thread.join(10)
    assert errors == []
    assert [u.name for u in setup.list()] == ["holder"]


def test_autocommit_isolation_is_honoured_no_begin_is_sent(sqlite_url: URL):
    for engine in (
        userstore.create_engine(sqlite_url).execution_options(isolation_level="AUTOCOMMIT"),
        userstore.create_engine(sqlite_url, isolation_level="AUTOCOMMIT"),
    ):
        sent: list[str] = []

        def record(_conn: object, _cursor: object, sql: str, *_: object, log=sent) -> None:
            log.append(sql)

        event.listen(engine, "before_cursor_execute", record)
        try:
            with engine.connect() as connection:
                connection.execute(text("INSERT INTO users (name, number) VALUES ('auto', 1)"))
                # no commit: each statement committed on its own
            with engine.connect() as connection:
                assert connection.execute(text("SELECT count(*) FROM users")).scalar() == 1
                connection.execute(text("DELETE FROM users"))
            assert not [s for s in sent if s.upper().startswith("BEGIN")]
        finally:
            engine.dispose()


# -- in-memory -----------------------------------------------------------------


@pytest.fixture(params=["sqlite://", "sqlite:///:memory:"])
def memory_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine = userstore.create_engine(request.param)
    migrations.upgrade(engine)
    yield engine
    engine.dispose()


def test_in_memory_a_second_session_in_the_same_thread_is_refused_and_no_commit_is_lost(
    memory_engine: Engine,
):
    factory = create_session_factory(memory_engine)
    with factory() as first_session, factory() as second_session:
        first, second = UserRepository(first_session), UserRepository(second_session)
        first.add(User(name="kept", number=1))
        assert first.count() == 1  # flushed: the first session holds the connection

        with pytest.raises(DatabaseError, match="another session in this thread"):
            second.count()

        first.commit()  # returns, and the user is stored
        assert second.count() == 1  # the refused session is usable again
        second.commit()

    seen: list[int] = []
    thread = threading.Thread(
        target=lambda: seen.append(UserRepository(factory()).count()),
    )
    thread.start()
    thread.join(10)
    assert seen == [1]  # the same database from another thread


def test_in_memory_threads_take_turns_and_lose_nothing(memory_engine: Engine):
    factory = create_session_factory(memory_engine)
    errors: list[BaseException] = []

    def add_many_units(worker: int) -> None:
        try:
            with factory() as session:
                repo = UserRepository(session)
                for i in range(50):
                    repo.add(User(name=f"t{worker}-{i}", number=repo.count()))
                    repo.commit()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=add_many_units, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with factory() as session:
        repo = UserRepository(session)
        assert repo.count() == 200
        # Units took turns: each counted every user committed before it.
        assert sorted(u.number for u in repo.list()) == list(range(200))


def test_in_memory_another_thread_waits_its_turn_then_gets_a_transient_error(
    sqlite_url: URL,
):
    engine = userstore.create_engine("sqlite://", pool_timeout=0.2)
    try:
        migrations.upgrade(engine)
        factory = create_session_factory(engine)
        holder = UserRepository(factory())
        holder.count()
        raised: list[BaseException] = []

        def wait_for_turn() -> None:
            try:
                UserRepository(factory()).count()
            except BaseException as error:  # reported below
                raised.append(error)

        thread = threading.Thread(target=wait_for_turn)
        thread.start()
        thread.join(10)
        holder.commit()
        assert len(raised) == 1
        assert isinstance(raised[0], TransientDatabaseError)
    finally:
        engine.dispose()


# -- many processes on one file ---------------------------------------------------

READERS, WRITERS, WRITES_PER_WRITER = 8, 2, 150


def _read_unit(repo: UserRepository, _worker: int, _i: int) -> None:
    repo.count()
    repo.list(limit=20)
    repo.get(f"w0-{random.randrange(WRITES_PER_WRITER):04d}")


def _write_unit(repo: UserRepository, worker: int, i: int) -> None:
    repo.add(User(name=f"w{worker}-{i:04d}", number=i))


def _work(
    url: str, role: str, worker: int, start: Barrier, stop: Event, results: multiprocessing.Queue
) -> None:
    """Run units of work (one session each): writers a fixed number, readers until stopped."""
    unit = _write_unit if role == "writer" else _read_unit
    engine = userstore.create_engine(url)
    units, errors = 0, []
    try:
        factory = create_session_factory(engine)
        start.wait(60)
        deadline = time.monotonic() + 120  # bounded, whatever happens to the others
        while time.monotonic() < deadline and (
            units < WRITES_PER_WRITER if role == "writer" else not stop.is_set()
        ):
            try:
                with factory() as session:
                    repo = UserRepository(session)
                    unit(repo, worker, units)
                    repo.commit()
                    units += 1
            except Exception as error:  # a finding: reported, not raised
                errors.append(f"{type(error).__name__}: {error}")
                if role == "writer":
                    units += 1  # counted as lost below: stored < expected
    finally:
        engine.dispose()
        results.put((role, units, errors))


def test_eight_reader_processes_and_two_writers_on_one_file_never_see_locked_or_lose(
    sqlite_url: URL,
):
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(READERS + WRITERS)
    stop = spawn.Event()
    results = spawn.Queue()
    rendered = sqlite_url.render_as_string(hide_password=False)
    processes = [
        spawn.Process(target=_work, args=(rendered, "writer", w, start, stop, results))
        for w in range(WRITERS)
    ]
    processes += [
        spawn.Process(target=_work, args=(rendered, "reader", r, start, stop, results))
        for r in range(READERS)
    ]
    began = time.perf_counter()
    for process in processes:
        process.start()
    # Readers report only once stopped, so the first results are the writers'.
    outcomes = [results.get(timeout=180) for _ in range(WRITERS)]
    elapsed = time.perf_counter() - began
    stop.set()
    outcomes += [results.get(timeout=180) for _ in range(READERS)]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    assert {role for role, _, _ in outcomes[:WRITERS]} == {"writer"}
    errors = [error for _, _, errs in outcomes for error in errs]
    locked = [error for error in errors if "locked" in error]
    reads = sum(units for role, units, _ in outcomes if role == "reader")
    plain = sqlalchemy.create_engine(sqlite_url)
    try:
        with plain.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM users")).scalar_one()
    finally:
        plain.dispose()
    assert locked == []
    assert errors == []
    assert stored == WRITERS * WRITES_PER_WRITER  # lost 0
    assert reads > 0
    print(
        f"\n[sqlite] {READERS} reader processes ({reads} read units) beside {WRITERS} writers "
        f"({stored} commits) on one file, {elapsed:.1f}s: 0 'database is locked', lost 0"
    )


def test_adding_the_name_of_a_loaded_user_deleted_since_is_transient_not_a_duplicate(
    sqlite_url: URL, engines: list[Engine]
):
    handler = _repo(engines, sqlite_url)
    setup = _repo(engines, sqlite_url)
    _ = setup.add(User(name="z", number=1))
    setup.commit()
    stale = handler.get_one("z")  # the handler's snapshot holds z
    setup.delete("z")
    setup.commit()

    with pytest.raises(TransientDatabaseError):  # its snapshot is stale: retry, not "taken"
        handler.add(User(name="z", number=77))
    assert stale.number == 1
    handler.add(User(name="z", number=77))  # the retry sees z gone
    handler.commit()
    assert [(u.name, u.number) for u in setup.list()] == [("z", 77)]


class _Interrupted(BaseException):
    """What a KeyboardInterrupt or a framework's timeout looks like to the driver."""


def test_in_memory_an_interrupted_statement_loses_nothing_committed(memory_engine: Engine):
    factory = create_session_factory(memory_engine)
    with factory() as session:
        repo = UserRepository(session)
        repo.add(User(name="committed", number=1))
        repo.commit()

    def interrupt(*_: object) -> None:
        raise _Interrupted

    session = factory()
    UserRepository(session).add(User(name="uncommitted", number=1))
    session.flush()
    event.listen(memory_engine, "before_cursor_execute", interrupt)
    try:
        with pytest.raises(_Interrupted):
            session.execute(text("SELECT count(*) FROM users"))
    finally:
        event.remove(memory_engine, "before_cursor_execute", interrupt)
    session.close()
    with factory() as session:
        session.connection().invalidate()  # SQLAlchemy giving up on the connection, directly

    with factory() as session:
        assert [u.name for u in UserRepository(session).list()] == ["committed"]


def test_in_memory_a_thread_whose_old_session_is_closed_elsewhere_waits_its_turn():
    # FastAPI-style: a session opened on worker A is closed by another thread,
    # while worker B holds the turn; A's next request must wait, not be refused.
    engine = userstore.create_engine("sqlite://", pool_timeout=5)
    try:
        migrations.upgrade(engine)
        factory = create_session_factory(engine)
        worker_a, worker_b = ThreadPoolExecutor(1), ThreadPoolExecutor(1)

        def hold() -> Session:
            session = factory()
            UserRepository(session).count()
            return session

        def request(seconds: float) -> int:
            with factory() as session:
                counted = UserRepository(session).count()
                time.sleep(seconds)
                return counted

        first = worker_a.submit(hold).result()
        second = worker_b.submit(request, 1.5)
        time.sleep(0.1)
        third = worker_a.submit(request, 0)
        time.sleep(0.2)
        first.close()  # from the main thread: the turn passes to worker B

        assert second.result(10) == 0
        assert third.result(10) == 0  # waited for B, as any other thread would
        worker_a.shutdown()
        worker_b.shutdown()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?foo=bar",
        "sqlite://?cache=shared",
    ],
)
def test_a_sqlite_url_parameter_that_would_be_ignored_is_refused(url: str):
    with pytest.raises(ConfigurationError, match="would be ignored"):
        userstore.create_engine(url)


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db?timeout=abc", "mariadb://root@127.0.0.1:3306/test?port=abc"]
)
def test_a_connect_option_that_cannot_be_parsed_is_a_configuration_error(url: str):
    with pytest.raises(ConfigurationError, match=r"abc|should be of type int"):
        userstore.create_engine(url).connect()
