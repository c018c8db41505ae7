"""Paths a new user walks that the first contract missed, on every backend.

The duplicate name is always the right one, whatever happened earlier in the
session; no call silently drops a change; users stay readable after their
session ends; and building repositories costs nothing that accumulates.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import userstore
from tests.flavours import FlavouredEngine
from userstore import (
    ConfigurationError,
    DuplicateUserError,
    InvalidUserError,
    TransientDatabaseError,
    User,
    UserRepository,
    create_session_factory,
)

Stored = Callable[[], list[tuple[str, int | None]]]


@pytest.fixture
def other(open_repository: Callable[[], UserRepository]) -> UserRepository:
    """A second repository on its own session, like another request."""
    return open_repository()


@contextmanager
def _repository_on_a_session_of_its_own(
    flavoured_engine: FlavouredEngine,
) -> Iterator[UserRepository]:
    """A repository of the flavour under test on a new session, closed when the block ends."""
    with flavoured_engine.session() as session:
        yield flavoured_engine.repository(session)


def _store(repo: UserRepository, *names: str) -> None:
    for name in names:
        repo.add(User(name=name, number=0))
    repo.commit()


def _duplicate_name(call: Callable[[], object]) -> str:
    with pytest.raises(DuplicateUserError) as raised:
        call()
    return raised.value.name


@pytest.mark.parametrize("end", ["close", "reset"])
def test_the_duplicate_is_named_right_after_the_session_was_closed_or_reset(
    repo: UserRepository, other: UserRepository, end: str
):
    repo.add(User(name="a", number=1))
    repo.count()  # flushed in a transaction that is then abandoned
    getattr(repo.session, end)()
    _store(other, "b")

    repo.add(User(name="a", number=1))
    repo.add(User(name="b", number=1))

    assert _duplicate_name(repo.commit) == "b"


@pytest.mark.parametrize("bulk", ["add_many", "upsert_many"])
def test_the_duplicate_is_named_right_after_a_bulk_write_in_the_same_unit_of_work(
    repo: UserRepository, stored: Stored, bulk: str
):
    getattr(repo, bulk)([("a", 1)])
    repo.add(User(name="b", number=2))
    repo.add(User(name="a", number=3))

    assert _duplicate_name(repo.commit) == "a"
    assert stored() == []
    _store(repo, "a", "b")  # usable at once
    assert stored() == [("a", 0), ("b", 0)]


def test_the_duplicate_is_named_right_after_an_autoflush_following_a_bulk_write(
    repo: UserRepository, other: UserRepository
):
    _store(other, "taken")
    repo.add_many([("x", 1), ("y", 2)])
    repo.add(User(name="fresh", number=0))
    repo.add(User(name="taken", number=0))

    assert _duplicate_name(repo.count) == "taken"
    assert repo.count() == 1


def test_the_duplicate_is_named_right_after_the_app_rolled_back_its_own_savepoint(
    repo: UserRepository,
):
    repo.add(User(name="X", number=1))
    repo.count()  # X is written in this transaction ...
    gc.collect()  # ... and no longer held by the session (its identity map is weak)
    savepoint = repo.session.begin_nested()
    repo.add(User(name="A", number=1))
    repo.count()
    savepoint.rollback()  # A is taken back; X stays

    repo.add(User(name="A", number=2))
    repo.add(User(name="X", number=2))

    assert _duplicate_name(repo.commit) == "X"


def test_the_duplicate_is_named_right_when_a_name_deleted_in_this_unit_is_added_again(
    repo: UserRepository, other: UserRepository
):
    _store(other, "gone", "taken")
    repo.delete("gone")
    repo.add(User(name="gone", number=1))  # allowed: deleted in this very unit
    repo.add(User(name="taken", number=1))

    assert _duplicate_name(repo.commit) == "taken"


@pytest.mark.not_on_fake(reason="it counts a SQLAlchemy session's event hooks")
def test_many_repositories_on_one_session_add_nothing_that_accumulates(
    engine: Engine, empty_table: None
):
    with create_session_factory(engine)() as session:
        first = UserRepository(session)
        probe = weakref.ref(UserRepository(session))
        for _ in range(2_000):
            UserRepository(session)
        gc.collect()

        assert probe() is None  # nothing keeps a repository alive
        assert len(session.dispatch.before_flush) == 1  # one set of hooks per session
        assert len(session.dispatch.after_flush) == 1
        first.add(User(name="a", number=1))
        first.commit()
        assert first.get_one("a").number == 1


def test_renaming_a_loaded_user_then_adding_its_old_name_keeps_both_changes(
    repo: UserRepository, stored: Stored
):
    _store(repo, "a")
    loaded = repo.get_one("a")
    loaded.name = "b"
    repo.add(User(name="a", number=2))
    loaded.number = 99
    repo.commit()

    assert stored() == [("a", 2), ("b", 99)]


def test_adding_a_name_whose_loaded_user_was_deleted_elsewhere_replaces_it(
    repo: UserRepository, other: UserRepository, stored: Stored
):
    _store(repo, "a")
    repo.get_one("a")
    repo.commit()
    other.delete("a")
    other.commit()

    repo.add(User(name="a", number=5))
    repo.commit()

    assert stored() == [("a", 5)]


def test_a_loaded_user_still_holding_its_name_makes_adding_that_name_a_duplicate(
    repo: UserRepository,
):
    _store(repo, "a")
    loaded = repo.get_one("a")

    assert _duplicate_name(lambda: repo.add(User(name="a", number=5))) == "a"
    assert loaded.number == 0


def test_adding_a_user_that_belongs_to_another_open_session_is_invalid_input(
    repo: UserRepository, other: UserRepository, sent_sql
):
    elsewhere = other.add(User(name="mine", number=1))
    sent_sql.clear()

    with pytest.raises(InvalidUserError, match="another session"):
        repo.add(elsewhere)
    assert sent_sql.statements == []


def test_a_user_returned_by_a_closed_session_is_fully_readable(
    flavoured_engine: FlavouredEngine, empty_table: None
):
    with _repository_on_a_session_of_its_own(flavoured_engine) as repo:
        created = repo.add(User(name="handler", number=1))
        repo.commit()
    with _repository_on_a_session_of_its_own(flavoured_engine) as repo:
        updated = repo.get_one("handler")
        updated.number = 2
        repo.commit()

    # After the sessions closed: what a handler serializes.
    assert (created.name, created.number) == ("handler", 1)
    assert created.created_at is not None
    assert created.updated_at is not None
    assert (updated.number, updated.created_at) == (2, created.created_at)
    assert updated.updated_at >= created.updated_at


def test_reading_a_user_after_commit_sends_no_sql_but_a_read_through_the_repository_does(
    repo: UserRepository, other: UserRepository, sent_sql
):
    user = repo.add(User(name="a", number=1))
    repo.commit()
    other.get_one("a").number = 2
    other.commit()
    sent_sql.clear()

    assert user.number == 1  # the value this unit of work wrote; no lazy load
    assert sent_sql.statements == []
    assert repo.get_one("a").number == 2  # the repository asks the database
    assert user.number == 2  # and refreshes the object it returns
    assert [u.number for u in repo.list()] == [2]


def test_changing_a_user_that_another_unit_of_work_deleted_is_transient_and_recoverable(
    repo: UserRepository, other: UserRepository, stored: Stored
):
    _store(repo, "a", "keep")
    user = repo.get_one("a")
    repo.commit()
    other.delete("a")
    other.commit()

    user.number = 5
    with pytest.raises(TransientDatabaseError, match="deleted or renamed"):
        repo.commit()
    assert repo.get("a") is None  # the retry sees why
    _store(repo, "after")
    assert stored() == [("after", 0), ("keep", 0)]


def test_iter_all_refuses_a_bad_batch_size_when_called(repo: UserRepository):
    with pytest.raises(InvalidUserError, match="batch_size"):
        repo.iter_all(batch_size=0)


@pytest.mark.parametrize("shape", ["list", "generator"])
def test_a_bad_row_in_add_many_keeps_earlier_staged_work_and_writes_nothing_of_the_call(
    repo: UserRepository, stored: Stored, shape: str
):
    repo.add(User(name="staged", number=1))
    rows = [(f"u{i:03d}", i) for i in range(25)] + [("late", "not a number")]
    given = rows if shape == "list" else (row for row in rows)

    with pytest.raises(InvalidUserError, match="row 25"):
        repo.add_many(given, batch_size=10)  # type: ignore[arg-type]

    assert repo.count() == 1
    repo.commit()
    assert stored() == [("staged", 1)]


def test_users_stay_readable_after_the_apps_own_rollback_and_after_close(
    flavoured_engine: FlavouredEngine, empty_table: None
):
    with _repository_on_a_session_of_its_own(flavoured_engine) as repo:
        kept = repo.add(User(name="kept", number=1))
        changed = repo.add(User(name="changed", number=2))
        repo.commit()
        changed.number = 3
        repo.count()  # the change is flushed, then undone by the session itself
        repo.session.rollback()

    # After the close: no attribute needs the database (async: no MissingGreenlet).
    assert (kept.name, kept.number, changed.name, changed.number) == ("kept", 1, "changed", 2)
    assert changed.created_at is not None
    assert changed.updated_at is not None


def test_users_stay_readable_after_a_failed_session_begin_block(
    flavoured_engine: FlavouredEngine, empty_table: None
):
    with _repository_on_a_session_of_its_own(flavoured_engine) as repo:
        jenny = repo.add(User(name="Jenny", number=1))
        repo.commit()

        def failing_unit_of_work() -> None:
            with repo.session.begin():  # the app's own unit of work
                jenny.number = 5
                repo.add(User(name="Jenny", number=2))
                repo.count()

        with pytest.raises(DuplicateUserError):
            failing_unit_of_work()

    assert (jenny.name, jenny.number) == ("Jenny", 1)
    assert jenny.created_at is not None


def test_a_user_loaded_before_a_bulk_write_shows_it_and_stays_readable_after_close(
    flavoured_engine: FlavouredEngine, empty_table: None
):
    with _repository_on_a_session_of_its_own(flavoured_engine) as repo:
        _store(repo, "a")
        loaded = repo.get_one("a")
        repo.upsert_many([("a", 60)])
        repo.add_many([("b", 1)])
        repo.commit()

    assert loaded.number == 60  # after the session closed: no lazy load needed
    assert loaded.updated_at >= loaded.created_at


def test_a_user_loaded_before_a_bulk_write_and_deleted_elsewhere_stays_readable(
    repo: UserRepository, other: UserRepository
):
    _store(repo, "a")
    loaded = repo.get_one("a")
    repo.upsert_many([("a", 7)])
    repo.commit()
    other.delete("a")
    other.commit()

    assert loaded.number == 7  # its last known value, never a refresh that finds nothing


@pytest.mark.parametrize("read", ["get", "list", "iter_all"])
def test_a_read_with_autoflush_off_never_undoes_a_staged_change(
    repo: UserRepository, stored: Stored, read: str
):
    _store(repo, "a")
    user = repo.get_one("a")
    user.number = 5

    with repo.session.no_autoflush:
        if read == "get":
            repo.get("a")
        else:
            list(getattr(repo, read)())

    assert user.number == 5
    repo.commit()
    assert stored() == [("a", 5)]


def test_iter_all_reads_every_user_even_when_its_session_is_closed_mid_loop(
    repo: UserRepository, stored: Stored
):
    repo.add_many((f"u{i:05d}", i) for i in range(3_000))
    repo.commit()
    seen = 0

    for _ in repo.iter_all(batch_size=100):
        seen += 1
        if seen == 150:
            repo.session.close()  # the next page is read in a new transaction

    assert seen == 3_000
    assert len(stored()) == 3_000


@pytest.mark.parametrize("how", ["upsert_many", "upsert", "failed add_many"])
def test_a_rolled_back_bulk_write_never_shows_on_a_user_the_session_holds(
    flavoured_engine: FlavouredEngine, empty_table: None, how: str
):
    with _repository_on_a_session_of_its_own(flavoured_engine) as repo:
        _store(repo, "b", "taken")
        held = repo.get_one("b")
        if how == "upsert_many":
            repo.upsert_many([("b", 9)])
            repo.rollback()
        elif how == "upsert":
            assert repo.upsert("b", 9) is held
            repo.rollback()
        else:
            repo.upsert_many([("b", 9)])
            with pytest.raises(DuplicateUserError):
                repo.add_many([("taken", 1)])
        assert held.number == 0
        assert repo.get_one("b").number == 0
    assert held.number == 0  # and after the session closed


@pytest.mark.parametrize("write", ["upsert", "upsert_many", "add_many"])
def test_a_bulk_write_of_a_renamed_users_old_name_leaves_the_renamed_user_alone(
    repo: UserRepository, stored: Stored, write: str
):
    _store(repo, "c")
    renamed = repo.get_one("c")
    renamed.name = "c2"
    repo.count()  # the rename is flushed
    if write == "upsert":
        assert repo.upsert("c", 4) is not renamed
    else:
        getattr(repo, write)([("c", 4)])
    repo.commit()
    renamed.number = 99
    repo.commit()

    assert (renamed.name, renamed.number) == ("c2", 99)
    assert stored() == [("c", 4), ("c2", 99)]
    assert [(u.name, u.number) for u in repo.list()] == [("c", 4), ("c2", 99)]


def test_a_rename_inside_a_rolled_back_savepoint_leaves_the_user_readable(
    repo: UserRepository, stored: Stored
):
    _store(repo, "a")
    user = repo.get_one("a")
    savepoint = repo.session.begin_nested()
    user.name = "A"
    repo.count()
    savepoint.rollback()

    assert user.name == "a"
    assert repo.get("a") is user
    assert stored() == [("a", 0)]


@pytest.mark.not_on_fake(reason="it invalidates the session's database connection")
def test_after_the_session_was_invalidated_or_interrupted_the_next_call_works(
    repo: UserRepository, stored: Stored
):
    _store(repo, "kept")
    repo.add(User(name="lost", number=1))
    repo.count()
    repo.session.connection().invalidate()  # as SQLAlchemy does after an interruption

    with pytest.raises(TransientDatabaseError, match="connection"):  # once: the unit is lost
        repo.count()
    assert repo.count() == 1  # then usable, with no rollback() call
    assert stored() == [("kept", 0)]


class _Interrupted(BaseException):
    """What a KeyboardInterrupt looks like to the code it interrupts."""


@pytest.mark.not_on_fake(reason="it interrupts a statement from the engine's SQL events")
def test_an_interruption_inside_a_repository_call_is_raised_as_itself(
    repo: UserRepository, flavoured_engine: FlavouredEngine, stored: Stored
):
    _store(repo, "kept")

    def interrupt(*_: object) -> None:
        raise _Interrupted

    engine = flavoured_engine.sync_engine
    repo.add(User(name="new", number=1))
    event.listen(engine, "before_cursor_execute", interrupt)
    try:
        with pytest.raises(_Interrupted):
            repo.commit()
    finally:
        event.remove(engine, "before_cursor_execute", interrupt)

    assert repo.count() == 1  # the next call works
    assert stored() == [("kept", 0)]


@pytest.mark.parametrize("how", ["duplicate", "deleted elsewhere"])
def test_a_user_changed_in_a_failed_unit_of_work_is_readable_after_it(
    repo: UserRepository, other: UserRepository, how: str
):
    _store(repo, "jenny", "taken")
    jenny = repo.get_one("jenny")
    jenny.number = 2
    if how == "duplicate":
        repo.add(User(name="taken", number=9))
        assert _duplicate_name(repo.commit) == "taken"
        expected = 0  # the stored value again
    else:
        other.delete("jenny")
        other.commit()
        with pytest.raises(TransientDatabaseError):
            repo.commit()
        expected = 2  # its row is gone: it keeps the value it last had here
    repo.session.close()

    assert (jenny.name, jenny.number) == ("jenny", expected)  # async: no MissingGreenlet
    assert jenny.created_at is not None
    _ = jenny.updated_at  # readable (None if its row went before it was ever read here)


def test_a_user_deleted_in_a_rolled_back_unit_of_work_is_readable_after_it(
    repo: UserRepository,
):
    _store(repo, "a")
    user = repo.get_one("a")
    repo.delete("a")
    repo.rollback()
    repo.session.close()

    assert (user.name, user.number) == ("a", 0)
    assert user.updated_at is not None


def test_a_savepoint_rolled_back_after_a_bulk_write_shows_the_values_from_before_it(
    repo: UserRepository,
):
    _store(repo, "c")
    held = repo.get_one("c")

    def upsert_then_fail() -> None:
        with repo.session.begin_nested():
            repo.upsert_many([("c", 555)])
            assert held.number == 555  # the bulk write refreshed it
            raise _AppError

    with pytest.raises(_AppError):
        upsert_then_fail()
    repo.session.close()

    assert held.number == 0


def test_a_savepoint_rolled_back_before_any_flush_gives_users_their_values_back(
    repo: UserRepository,
):
    _store(repo, "a")
    user = repo.get_one("a")

    def change_then_fail() -> None:
        with repo.session.begin_nested():
            user.number = 44
            raise _AppError

    with pytest.raises(_AppError):
        change_then_fail()
    repo.session.close()

    assert user.number == 0


class _AppError(Exception):
    """The app's own failure inside a savepoint."""


def test_a_session_of_the_other_flavour_is_refused_with_a_clear_error(engine: Engine):
    async_engine = userstore.create_async_engine(engine.url)
    async_session = userstore.create_async_session_factory(async_engine)()
    with create_session_factory(engine)() as session:
        with pytest.raises(InvalidUserError, match="goes to UserRepository"):
            userstore.AsyncUserRepository(session)  # type: ignore[arg-type]
        with pytest.raises(InvalidUserError, match="goes to AsyncUserRepository"):
            UserRepository(async_session)  # type: ignore[arg-type]


@pytest.mark.not_on_fake(reason="it binds a SQLAlchemy session to the engine per mapper")
@pytest.mark.parametrize("bound", ["class", "table"])
def test_a_session_bound_per_mapper_serves_every_call(
    engine: Engine, empty_table: None, bound: str
):
    key = User if bound == "class" else User.__table__
    with Session(binds={key: engine}, expire_on_commit=False) as session:
        repo = UserRepository(session)
        repo.add(User(name="ann", number=1))
        repo.upsert("bob", 2)
        assert repo.add_many([("cy", 3)]) == 1
        repo.upsert_many([("cy", 4), ("dee", 5)])
        repo.commit()
        assert repo.read_token().partition(":")[0] in ("sqlite", "postgresql", "mariadb")
        assert [(u.name, u.number) for u in repo.list()] == [
            ("ann", 1),
            ("bob", 2),
            ("cy", 4),
            ("dee", 5),
        ]
        repo.add(User(name="ann", number=9))
        with pytest.raises(DuplicateUserError, match="ann"):
            repo.commit()
        assert repo.count() == 4  # rolled back, and usable


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_session_bound_to_no_engine_is_refused_before_any_call(flavour: str):
    if flavour == "sync":
        with pytest.raises(ConfigurationError, match="bound to no engine"):
            UserRepository(Session())
    else:
        with pytest.raises(ConfigurationError, match="bound to no engine"):
            userstore.AsyncUserRepository(AsyncSession(expire_on_commit=False))


@pytest.mark.parametrize("row_was_deleted", [False, True], ids=["row-stored", "row-deleted"])
def test_a_user_loaded_by_an_earlier_unit_of_work_is_added_as_a_new_row(
    open_repository: Callable[[], UserRepository],
    stored,
    empty_table: None,
    row_was_deleted: bool,
):
    first = open_repository()
    first.add(User(name="Jenny", number=1))
    first.commit()
    jenny = first.get_one("Jenny")
    first.session.close()  # jenny is detached, her values kept
    if row_was_deleted:
        remover = open_repository()
        remover.delete("Jenny")
        remover.commit()

    later = open_repository()
    later.add(User(name="Sam", number=3))
    later.add(jenny)  # an INSERT, whatever SQLAlchemy would do with a detached object
    if row_was_deleted:
        later.commit()
        assert stored() == [("Jenny", 1), ("Sam", 3)]  # no change dropped
    else:
        with pytest.raises(DuplicateUserError) as raised:
            later.commit()
        assert raised.value.name == "Jenny"
        assert stored() == [("Jenny", 1)]  # the unit of work was rolled back
