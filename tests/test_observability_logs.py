"""The ``userstore`` logger: a DEBUG record per repository call, slow calls, runner retries.

Records are captured with caplog, on each backend, sync and async, and on the
in-memory fake. Only the ``userstore`` logger itself is looked at.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import URL, Engine, event, text
from sqlalchemy.orm import Session

import userstore
import userstore.asyncio.unit_of_work as async_runner_module
import userstore.unit_of_work as runner_module
from tests import observability_support
from tests.observability_support import (
    EVERY_CALL,
    Units,
    async_failures,
    async_verbs,
    run_async,
    sync_failures,
    sync_verbs,
)
from tests.test_readme import readme_blocks
from userstore import (
    AsyncUserRepository,
    DatabaseError,
    InvalidUserError,
    TransientDatabaseError,
    User,
    UserNotFoundError,
    UserRepository,
)
from userstore.observability import LOGGER_NAME, set_slow_call_threshold, slow_call_threshold
from userstore.testing import (
    AsyncInMemoryUserRepository,
    InMemoryUserRepository,
    InMemoryUserStore,
)

FIELDS = {
    "userstore_operation",
    "userstore_backend",
    "userstore_rows",
    "userstore_duration_ms",
    "userstore_outcome",
    "userstore_error",
    "userstore_error_code",
}
DUPLICATE_CODE = {
    "sqlite": "SQLITE_CONSTRAINT_PRIMARYKEY",
    "postgresql": "23505",
    "mariadb": 1062,
}


class Records:
    """The records of the ``userstore`` logger during a test."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def all(self) -> list[logging.LogRecord]:
        return [record for record in self._caplog.records if record.name == LOGGER_NAME]

    def calls(self) -> list[tuple[str, Any]]:
        return [(r.userstore_operation, r.userstore_rows) for r in self.all()]

    def clear(self) -> None:
        self._caplog.clear()


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[Records]:
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        yield Records(caplog)


@pytest.fixture
def threshold() -> Iterator[Callable[[float | None], None]]:
    yield set_slow_call_threshold
    set_slow_call_threshold(None)


@pytest.fixture
def no_users(plain_engine: Engine) -> None:
    with plain_engine.begin() as connection:
        connection.execute(text("DELETE FROM users"))


def check_every_verb(records: Records, backend: str) -> None:
    """One DEBUG record per public call, with flat userstore_* fields."""
    assert records.calls() == EVERY_CALL
    for record in records.all():
        assert record.levelno == logging.DEBUG
        assert set(vars(record)) >= FIELDS
        assert record.userstore_backend == backend
        assert record.userstore_outcome == "ok"
        assert record.userstore_error is None
        assert record.userstore_error_code is None
        assert isinstance(record.userstore_duration_ms, float)
        assert record.userstore_duration_ms >= 0
        assert record.getMessage().startswith(f"userstore.{record.userstore_operation} on ")
        if record.userstore_operation != "iter_all":  # (its pages are fetched by userstore)
            # the app's line that made the call
            assert record.pathname == observability_support.__file__


def test_each_sync_call_is_one_debug_record_with_operation_backend_rows_and_duration(
    backend: str, engine: Engine, no_users: None, records: Records
):
    with userstore.create_session_factory(engine)() as session:
        sync_verbs(UserRepository(session))
    check_every_verb(records, backend)


def test_each_async_call_is_one_debug_record_with_operation_backend_rows_and_duration(
    backend: str, database_url: URL, no_users: None, records: Records
):
    async def work(_engine: Any, sessions: Any) -> None:
        async with sessions() as session:
            await async_verbs(AsyncUserRepository(session))

    run_async(database_url, work)
    check_every_verb(records, backend)


def test_each_call_on_the_in_memory_fake_is_one_debug_record_with_backend_memory(
    records: Records,
):
    sync_verbs(InMemoryUserStore().repository())
    check_every_verb(records, "memory")


def test_each_call_on_the_async_in_memory_fake_is_one_debug_record_with_backend_memory(
    records: Records,
):
    asyncio.run(async_verbs(InMemoryUserStore().async_repository()))
    check_every_verb(records, "memory")


def check_failures(records: Records, backend: str) -> None:
    failed = [record for record in records.all() if record.userstore_outcome == "error"]
    assert [(r.userstore_operation, r.userstore_error) for r in failed] == [
        ("get_one", "UserNotFoundError"),
        ("commit", "DuplicateUserError"),
    ]
    not_found, duplicate = failed
    assert not_found.userstore_error_code is None
    assert not_found.userstore_rows is None
    assert duplicate.userstore_error_code == DUPLICATE_CODE[backend]
    assert duplicate.levelno == logging.DEBUG
    assert "failed" in duplicate.getMessage()
    assert "DuplicateUserError" in duplicate.getMessage()


def test_a_failed_sync_call_logs_the_error_class_and_the_driver_code(
    backend: str, engine: Engine, no_users: None, records: Records
):
    sync_failures(userstore.create_session_factory(engine))
    check_failures(records, backend)


def test_a_failed_async_call_logs_the_error_class_and_the_driver_code(
    backend: str, database_url: URL, no_users: None, records: Records
):
    run_async(database_url, async_failures)
    check_failures(records, backend)


def test_a_call_slower_than_the_threshold_is_one_warning_instead_of_its_debug_record(
    records: Records, threshold: Callable[[float | None], None]
):
    repo = InMemoryUserStore().repository()
    threshold(0)  # every call takes longer than no time at all
    repo.add(User(name="ann", number=1))
    (record,) = records.all()
    assert record.levelno == logging.WARNING
    assert record.userstore_operation == "add"
    assert record.userstore_slow_threshold_ms == 0.0
    assert record.getMessage().startswith("slow call: userstore.add on memory")
    records.clear()
    threshold(3600)
    repo.commit()
    (record,) = records.all()
    assert record.levelno == logging.DEBUG
    assert not hasattr(record, "userstore_slow_threshold_ms")
    assert slow_call_threshold() == 3600.0


def test_slow_calls_are_logged_when_debug_records_are_not(
    caplog: pytest.LogCaptureFixture, threshold: Callable[[float | None], None]
):
    repo = InMemoryUserStore().repository()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        repo.add(User(name="ann", number=1))
        assert Records(caplog).all() == []
        threshold(0)
        repo.commit()
    assert [r.userstore_operation for r in Records(caplog).all()] == ["commit"]


@pytest.mark.parametrize(
    "bad",
    [
        -1,
        float("nan"),
        float("inf"),
        "1",
        True,
        1j,
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("-0.5"),
        Fraction(-1, 2),
        10**400,  # finite, but no float holds it
        Decimal("1e400"),
    ],
)
def test_a_threshold_that_is_not_a_finite_non_negative_number_is_refused(
    bad: Any, threshold: Callable[[Any], None]
):
    threshold(2)
    with pytest.raises(InvalidUserError, match="slow-call threshold"):
        set_slow_call_threshold(bad)
    assert slow_call_threshold() == 2.0  # unchanged


@pytest.mark.parametrize(
    ("seconds", "kept"),
    [(Decimal("0.5"), 0.5), (Fraction(1, 2), 0.5), (-0.0, 0.0), (Decimal("-0"), 0.0), (3, 3.0)],
)
def test_a_threshold_may_be_any_real_number_and_is_kept_as_a_float(
    seconds: Any, kept: float, threshold: Callable[[Any], None]
):
    threshold(seconds)
    value = slow_call_threshold()
    assert type(value) is float
    assert value == kept
    assert math.copysign(1.0, value) == 1.0  # -0.0 reads back as 0.0


def test_inner_calls_add_no_records_and_a_json_formatter_sees_every_field(records: Records):
    repo = InMemoryUserStore().repository()
    repo.upsert("ann", 1)  # calls upsert_many
    repo.get_one("ann")  # calls get
    repo.delete("ann")  # calls get_one
    assert [operation for operation, _ in records.calls()] == ["upsert", "get_one", "delete"]
    record = records.all()[0]
    standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
    fields = {key: value for key, value in vars(record).items() if key not in standard}
    assert set(fields) >= FIELDS
    assert all(key.startswith("userstore_") for key in fields)
    assert json.loads(json.dumps(fields))["userstore_operation"] == "upsert"


def test_the_logger_is_silent_until_the_app_configures_logging():
    code = """
        import userstore
        from userstore import User
        from userstore.observability import set_slow_call_threshold
        from userstore.testing import InMemoryUserStore

        set_slow_call_threshold(0)  # every call is a WARNING, with nowhere to go
        repo = InMemoryUserStore().repository()
        repo.add(User(name="ann", number=1))
        repo.commit()
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


RETRY_FIELDS = {
    "userstore_runner",
    "userstore_attempt",
    "userstore_attempts",
    "userstore_stage",
    "userstore_backend",
    "userstore_error",
    "userstore_error_code",
    "userstore_retry_in_ms",
}


def flaky(failures: int) -> Callable[[Any], Any]:
    """A work that fails transiently ``failures`` times, then adds a user."""
    calls = []

    def work(repo: Any) -> Any:
        calls.append(1)
        if len(calls) <= failures:
            raise TransientDatabaseError("deadlock detected", code="40P01", backend="postgresql")
        return repo.add(User(name="ann", number=1))

    return work


def check_retries(records: Records, runner: str, backend: str) -> None:
    retries = [record for record in records.all() if hasattr(record, "userstore_runner")]
    assert [(r.levelno, r.userstore_attempt, r.userstore_attempts) for r in retries] == [
        (logging.WARNING, 1, 3),
        (logging.WARNING, 2, 3),
    ]
    for record in retries:
        assert set(vars(record)) >= RETRY_FIELDS
        assert record.userstore_runner == runner
        assert record.userstore_stage == "in the work"
        assert record.userstore_error == "TransientDatabaseError"
        assert record.userstore_error_code == "40P01"
        assert record.userstore_backend == backend
        assert record.userstore_retry_in_ms >= 0
        assert "TransientDatabaseError (code 40P01); retrying in" in record.getMessage()
        assert record.pathname == __file__  # the app's call of the runner


def test_the_runner_logs_each_retry_with_its_cause_attempt_and_pause(
    backend: str, engine: Engine, no_users: None, records: Records, monkeypatch: Any
):
    monkeypatch.setattr(runner_module, "_sleep", lambda _seconds: None)
    sessions = userstore.create_session_factory(engine)
    user = userstore.run_unit_of_work(sessions, flaky(2), attempts=3)
    assert user.name == "ann"
    check_retries(records, "run_unit_of_work", backend)  # the session's, not the error's


def test_the_async_runner_logs_each_retry_with_its_cause_attempt_and_pause(
    backend: str, database_url: URL, no_users: None, records: Records, monkeypatch: Any
):
    async def no_pause(_seconds: float) -> None:
        return None

    monkeypatch.setattr(async_runner_module, "_sleep", no_pause)
    work = flaky(2)

    async def async_work(repo: Any) -> Any:
        return await repo.add(work(_Staging()))

    async def main(_engine: Any, sessions: Any) -> Any:
        return await userstore.run_unit_of_work_async(sessions, async_work, attempts=3)

    assert run_async(database_url, main).name == "ann"
    check_retries(records, "run_unit_of_work_async", backend)


class _Staging:
    """Stands in for a repository in ``flaky``: returns the user it would add."""

    def add(self, user: User) -> User:
        return user


def test_the_runner_logs_the_last_failed_attempt_as_giving_up(records: Records, monkeypatch: Any):
    monkeypatch.setattr(runner_module, "_sleep", lambda _seconds: None)
    store = InMemoryUserStore()
    with pytest.raises(TransientDatabaseError):
        userstore.run_unit_of_work(store.repository, flaky(5), attempts=2)
    retries = [record for record in records.all() if hasattr(record, "userstore_runner")]
    assert [(r.userstore_attempt, r.userstore_retry_in_ms) for r in retries[1:]] == [(2, None)]
    assert retries[-1].getMessage().endswith("no attempts left")
    assert {r.userstore_backend for r in retries} == {"memory"}
    assert {r.pathname for r in retries} == {__file__}


def test_the_readme_observability_block_logs_one_json_line_per_call(tmp_path: Path):
    (block,) = readme_blocks("python", "Observability")
    environment = {
        key: value for key, value in os.environ.items() if key != "USERSTORE_DATABASE_URL"
    }
    result = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["userstore_operation"] for line in lines] == ["add", "commit", "get_one"]
    assert {line["userstore_backend"] for line in lines} == {"sqlite"}
    assert [line["level"] for line in lines] == ["DEBUG"] * 3


class _SessionThatFindsNoBind(Session):
    """An app's session class with its own ``get_bind``, which finds nothing."""

    def get_bind(self, *_args: Any, **_kwargs: Any) -> Any:
        raise sqlalchemy.exc.UnboundExecutionError("no engine for this session")


def test_a_retry_on_a_session_whose_bind_is_unknown_names_an_unknown_backend(
    records: Records, monkeypatch: Any
):
    monkeypatch.setattr(runner_module, "_sleep", lambda _seconds: None)
    failures = [TransientDatabaseError("raised by the work itself, with no backend")]

    def work(_repo: Any) -> int:
        if failures:
            raise failures.pop()
        return 1

    factory = lambda: _SessionThatFindsNoBind(expire_on_commit=False)  # noqa: E731
    assert userstore.run_unit_of_work(factory, work) == 1
    (retry,) = [r for r in records.all() if hasattr(r, "userstore_runner")]
    assert retry.userstore_backend == "unknown"


def test_a_call_on_a_session_whose_bind_is_unknown_is_logged_with_an_unknown_backend(
    records: Records,
):
    with _SessionThatFindsNoBind() as session:
        UserRepository(session).add(User(name="ann", number=1))
    assert [(r.userstore_operation, r.userstore_backend) for r in records.all()] == [
        ("add", "unknown")
    ]


VERBS = (
    "add",
    "get",
    "get_one",
    "exists",
    "count",
    "delete",
    "list",
    "add_many",
    "upsert",
    "upsert_many",
    "commit",
    "rollback",
)


@pytest.mark.parametrize(
    "repository",
    [UserRepository, AsyncUserRepository, InMemoryUserRepository, AsyncInMemoryUserRepository],
)
def test_every_verb_is_observed_and_keeps_its_undecorated_method(repository: type):
    for verb in VERBS:
        method = getattr(repository, verb)
        assert callable(method.__wrapped__), verb
        assert method.__doc__ == method.__wrapped__.__doc__


@contextmanager
def hooked(repo: Any, hook: Callable[..., None]) -> Iterator[None]:
    """Run the app's ``hook`` on each statement an async repository sends (each store access
    on the fake): app code that runs inside a userstore call."""
    if isinstance(repo, AsyncInMemoryUserRepository):
        store = repo.session.store
        store.listen(hook)
        try:
            yield
        finally:
            store.unlisten(hook)
        return
    engine = repo.session.bind.sync_engine
    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", hook)


@pytest.fixture
def units(backend: str, empty_table: None, request: pytest.FixtureRequest) -> Units:
    return Units(backend, request)


def test_calls_made_by_the_rows_given_to_a_sync_bulk_call_are_logged_as_the_apps_own(
    units: Units, records: Records
):
    other = InMemoryUserStore().repository()  # (SQLite would lock out a second session)
    with units.sync() as repo:

        def rows(names: tuple[str, ...]) -> Iterator[tuple[str, int]]:
            for name in names:
                repo.exists(name)  # the same unit of work, from the app's generator
                other.count()  # another unit of work
                yield (name, 1)

        assert repo.add_many(rows(("ann", "bob"))) == 2
        assert repo.upsert_many(rows(("cid",))).inserted == 1
        repo.rollback()
    assert records.calls() == [
        ("exists", 0),
        ("count", 0),
        ("exists", 0),
        ("count", 0),
        ("add_many", 2),
        ("exists", 0),
        ("count", 0),
        ("upsert_many", 1),
        ("rollback", None),
    ]


def test_calls_made_by_the_rows_given_to_an_async_bulk_call_are_logged_as_the_apps_own(
    units: Units, records: Records
):
    async def main() -> None:
        other = InMemoryUserStore().repository()
        async with units.async_() as repo:

            def rows(names: tuple[str, ...]) -> Iterator[tuple[str, int]]:
                for name in names:
                    other.exists(name)  # a sync repository, from inside the async call
                    yield (name, 1)

            assert await repo.add_many(rows(("ann", "bob"))) == 2
            assert (await repo.upsert_many(rows(("cid",)))).inserted == 1
            await repo.rollback()

    asyncio.run(main())
    assert records.calls() == [
        ("exists", 0),
        ("exists", 0),
        ("add_many", 2),
        ("exists", 0),
        ("upsert_many", 1),
        ("rollback", None),
    ]


def test_a_task_started_by_the_rows_of_a_call_logs_its_calls_once_the_call_has_returned(
    units: Units, records: Records
):
    async def main() -> None:
        async with units.async_() as repo:
            returned = asyncio.Event()
            tasks = []

            async def later() -> None:
                await returned.wait()
                await repo.count()
                await InMemoryUserStore().async_repository().exists("ann")

            def rows() -> Iterator[tuple[str, int]]:
                tasks.append(asyncio.get_running_loop().create_task(later()))
                yield ("ann", 1)

            await repo.add_many(rows())
            returned.set()
            await asyncio.gather(*tasks)
            await repo.rollback()

    asyncio.run(main())
    assert records.calls() == [("add_many", 1), ("count", 1), ("exists", 0), ("rollback", None)]


def test_a_task_started_by_an_app_hook_during_a_call_logs_its_own_calls(
    units: Units, records: Records
):
    # A hook (a SQLAlchemy event; the fake's store listener) is app code run
    # while the call is observed: the tasks it starts copy that context.
    async def main() -> None:
        async with units.async_() as repo:
            returned = asyncio.Event()
            tasks: list[asyncio.Task[None]] = []

            async def meanwhile() -> None:  # while the call still holds the unit of work
                with pytest.raises(DatabaseError, match="another task"):
                    await repo.count()

            async def afterwards() -> None:
                await returned.wait()
                await repo.count()

            def hook(*_args: object) -> None:
                if not tasks:
                    loop = asyncio.get_running_loop()
                    tasks.extend([loop.create_task(meanwhile()), loop.create_task(afterwards())])

            with hooked(repo, hook):
                await repo.count()
            returned.set()
            await asyncio.gather(*tasks)

    asyncio.run(main())
    assert [(r.userstore_operation, r.userstore_error) for r in records.all()] == [
        ("count", "DatabaseError"),  # the other task's call, refused
        ("count", None),
        ("count", None),
    ]


def test_userstores_own_inner_calls_stay_part_of_the_call_that_made_them(
    units: Units, records: Records
):
    with units.sync() as repo:
        repo.upsert("ann", 1)
        records.clear()
        repo.get("ann")
        repo.get_one("ann")
        repo.delete("ann")
        assert len(list(repo.iter_all(batch_size=1))) == 0
        repo.rollback()
    assert [operation for operation, _ in records.calls()] == [
        "get",
        "get_one",
        "delete",
        "iter_all",
        "rollback",
    ]


class ExplodingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError("the app's logging exploded")


class ExplodingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("the app's logging exploded")


@pytest.fixture(params=["handler", "filter"])
def exploding_logging(request: pytest.FixtureRequest) -> Iterator[None]:
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    if request.param == "handler":
        handler = ExplodingHandler()
        logger.addHandler(handler)
        yield
        logger.removeHandler(handler)
    else:
        explode = ExplodingFilter()
        logger.addFilter(explode)
        yield
        logger.removeFilter(explode)
    logger.setLevel(level)


EXPLODED = "RuntimeError: the app's logging exploded"


@pytest.mark.parametrize("api", ["sync", "async"])
def test_logging_that_raises_changes_no_calls_outcome_and_is_reported_once_per_failure(
    units: Units,
    api: str,
    exploding_logging: None,
    stored: Callable[[], list[tuple[str, int | None]]],
    capsys: pytest.CaptureFixture[str],
):
    user = User(name="ann", number=1)
    if api == "sync":
        with units.sync() as repo:
            assert repo.add(user) is user
            repo.commit()
            with pytest.raises(UserNotFoundError):
                repo.get_one("nobody")
    else:

        async def main() -> None:
            async with units.async_() as repo:
                assert await repo.add(user) is user
                await repo.commit()
                with pytest.raises(UserNotFoundError):
                    await repo.get_one("nobody")

        asyncio.run(main())
    assert stored() == [("ann", 1)]
    err = capsys.readouterr().err
    assert err.count(EXPLODED) == 3  # add, commit, get_one
    assert err.count("--- userstore: logging userstore.") == 3


def test_logging_that_raises_is_not_reported_when_logging_raise_exceptions_is_off(
    exploding_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: Any
):
    monkeypatch.setattr(logging, "raiseExceptions", False)
    repo = InMemoryUserStore().repository()
    repo.add(User(name="ann", number=1))
    assert repo.count() == 1
    assert capsys.readouterr().err == ""


def test_logging_that_raises_does_not_stop_the_runner_retrying(
    exploding_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: Any
):
    monkeypatch.setattr(runner_module, "_sleep", lambda _seconds: None)
    store = InMemoryUserStore()
    user = userstore.run_unit_of_work(store.repository, flaky(2), attempts=3)
    assert user.name == "ann"
    assert [row.name for row in store.rows()] == ["ann"]
    assert capsys.readouterr().err.count("--- userstore: logging a retry of run_unit_of_work") == 2
