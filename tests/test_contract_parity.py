"""Cases where the in-memory fake once behaved unlike the real repository.

Each test runs on every target (the real backends define what is right; the
``memory`` target must do the same), and came from a black-box script that
printed the real and the fake side by side.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable, Iterator

import pytest

from tests.flavours import LOOP
from userstore import (
    DatabaseError,
    DuplicateUserError,
    InvalidUserError,
    TransientDatabaseError,
    User,
    UserRepository,
)
from userstore.bulk import Row

Stored = Callable[[], list[tuple[str, int | None]]]
Opener = Callable[[], UserRepository]


def _failing_midway(rows: list[tuple[str, int]]) -> Iterator[Row]:
    yield from rows
    raise RuntimeError("the input broke")


@pytest.mark.parametrize("verb", ["add_many", "upsert_many"])
def test_an_input_that_breaks_midway_takes_back_only_what_that_bulk_call_wrote(
    repo: UserRepository, stored: Stored, verb: str
):
    repo.add_many([("old", 1)])
    repo.commit()
    old = repo.get_one("old")
    repo.add(User(name="keep", number=0))
    rows = [("g1", 1), ("g2", 2)] if verb == "add_many" else [("old", 5), ("g1", 1), ("g2", 2)]

    with pytest.raises(RuntimeError, match="the input broke"):
        getattr(repo, verb)(_failing_midway(rows), batch_size=1)

    assert [user.name for user in repo.list()] == ["keep", "old"]
    assert old.number == 1
    repo.commit()
    assert stored() == [("keep", 0), ("old", 1)]


@pytest.mark.parametrize("verb", ["upsert", "upsert_many"])
def test_an_upsert_stores_the_updated_at_it_returned_not_a_stamp_taken_at_commit(
    repo: UserRepository, open_repository: Opener, verb: str
):
    user = repo.add(User(name="t", number=1))
    repo.commit()
    stored_before = user.updated_at

    if verb == "upsert":
        assert repo.upsert("t", 3) is user
    else:
        repo.upsert_many([("t", 3)])
        assert repo.get("t") is user
    returned = user.updated_at
    repo.commit()

    again = open_repository().get_one("t")
    assert returned >= stored_before
    assert (again.number, again.updated_at) == (3, returned)
    assert user.updated_at == returned


def _loaded_by_an_earlier_unit_of_work(open_repository: Opener, how: str) -> User:
    if how == "closed":
        elsewhere = open_repository()
        loaded = elsewhere.get_one("u")
        elsewhere.session.close()
        return loaded
    return pickle.loads(pickle.dumps(open_repository().get_one("u")))


@pytest.mark.parametrize("how", ["closed", "pickled"])
def test_adding_a_user_loaded_by_an_earlier_unit_of_work_is_a_duplicate_while_it_is_stored(
    repo: UserRepository, open_repository: Opener, stored: Stored, how: str
):
    repo.add(User(name="u", number=1))
    repo.commit()
    loaded = _loaded_by_an_earlier_unit_of_work(open_repository, how)
    other = open_repository()
    other.add(User(name="other", number=2))

    assert other.add(loaded) is loaded
    with pytest.raises(DuplicateUserError) as raised:
        other.commit()

    assert raised.value.name == "u"
    assert stored() == [("u", 1)]


@pytest.mark.parametrize("how", ["closed", "pickled"])
def test_adding_a_user_loaded_by_an_earlier_unit_of_work_stores_it_again_once_deleted(
    repo: UserRepository, open_repository: Opener, stored: Stored, how: str
):
    repo.add(User(name="u", number=1))
    repo.commit()
    loaded = _loaded_by_an_earlier_unit_of_work(open_repository, how)
    loaded.number = 7
    repo.delete("u")
    repo.commit()
    other = open_repository()

    assert other.add(loaded) is loaded
    other.commit()

    assert stored() == [("u", 7)]


@pytest.mark.parametrize("when", ["flushed", "committed"])
def test_adding_a_user_whose_deletion_was_written_is_an_invalid_user_error(
    repo: UserRepository, stored: Stored, when: str
):
    user = repo.add(User(name="twice", number=1))
    repo.add(User(name="kept", number=2))
    repo.commit()
    repo.delete("twice")
    if when == "committed":
        repo.commit()

    with pytest.raises(InvalidUserError, match="was deleted"):
        repo.add(user)

    repo.commit()
    assert stored() == [("kept", 2)]


def test_adding_a_user_whose_deletion_was_rolled_back_is_harmless(
    repo: UserRepository, stored: Stored
):
    user = repo.add(User(name="back", number=1))
    repo.commit()
    repo.delete("back")
    repo.rollback()

    assert repo.add(user) is user
    repo.commit()
    assert stored() == [("back", 1)]


def test_a_rename_onto_a_taken_name_leaves_the_user_with_its_stored_values(
    repo: UserRepository, open_repository: Opener
):
    repo.add_many([("a", 1), ("b", 2)])
    repo.commit()
    user = repo.get_one("a")
    user.number = 50
    user.name = "b"

    with pytest.raises(DuplicateUserError) as raised:
        repo.count()

    assert raised.value.name == "b"
    assert (user.name, user.number) == ("a", 1)
    assert repo.get("a") is user
    assert [(u.name, u.number) for u in open_repository().list()] == [("a", 1), ("b", 2)]


def test_assigning_a_name_a_rolled_back_user_already_has_changes_nothing(
    repo: UserRepository, stored: Stored
):
    repo.add(User(name="a", number=1))
    repo.add(User(name="c", number=2))
    user = repo.get_one("c")
    user.name = "a"
    with pytest.raises(DuplicateUserError) as raised:
        repo.count()
    assert raised.value.name == "a"
    assert (user.name, user.number) == ("a", 2)

    user.name = "a"

    assert repo.count() == 0
    repo.commit()
    assert stored() == []


@pytest.mark.parametrize(("attribute", "value"), [("name", "x"), ("number", 7)])
def test_an_assignment_to_a_deleted_user_is_not_written_and_the_delete_wins(
    repo: UserRepository, stored: Stored, attribute: str, value: object
):
    repo.add_many([("ab", 1), ("keep", 2)])
    repo.commit()
    user = repo.get_one("ab")
    repo.delete("ab")

    setattr(user, attribute, value)

    assert repo.count() == 1
    repo.commit()
    assert stored() == [("keep", 2)]
    assert getattr(user, attribute) == value


@pytest.mark.parametrize(
    ("rows", "named"),
    [
        ([("c", 1), ("A", 1)], "A"),  # two taken names: the first in code-point order
        ([("A", 1), ("y", 1), ("y", 2)], "y"),  # a name repeated in the input comes first
        ([("x", 1), ("y", 1), ("y", 2), ("x", 2)], "x"),  # the first repeated, by first sight
    ],
)
def test_add_many_names_a_repeated_name_first_then_the_least_taken_one(
    repo: UserRepository, stored: Stored, rows: list[tuple[str, int]], named: str
):
    repo.add(User(name="c", number=1))  # stored first: PostgreSQL returns rows in this order
    repo.commit()
    repo.add(User(name="A", number=1))
    repo.commit()

    with pytest.raises(DuplicateUserError) as raised:
        repo.add_many(rows)

    assert raised.value.name == named
    assert stored() == [("A", 1), ("c", 1)]


@pytest.mark.parametrize("flavour", ["async"], indirect=True)
def test_two_tasks_on_one_async_repository_at_once_the_second_gets_a_database_error(
    repo: UserRepository, flavour: str
):
    repo.add_many([("a", 1), ("b", 2)])
    repo.commit()
    repository = repo.wrapped  # type: ignore[attr-defined]

    async def race() -> list[object]:
        return await asyncio.gather(*(repository.count() for _ in range(3)), return_exceptions=True)

    async def stream_beside_a_count() -> list[object]:
        async def read_all() -> list[str]:
            return [user.name async for user in repository.iter_all(batch_size=1)]

        return await asyncio.gather(repository.count(), read_all(), return_exceptions=True)

    first, *others = LOOP.run(race())

    assert first == 2
    assert [type(error) for error in others] == [DatabaseError, DatabaseError]
    assert all("one task at a time" in str(error) for error in others)
    counted, streamed = LOOP.run(stream_beside_a_count())
    assert counted == 2
    assert type(streamed) is DatabaseError
    assert repo.count() == 2  # one task after another is fine
    assert [user.name for user in repo.iter_all(batch_size=1)] == ["a", "b"]


def test_changing_a_user_another_unit_of_work_deleted_quotes_the_update_that_matched_nothing(
    repo: UserRepository, open_repository: Opener, stored: Stored
):
    repo.add(User(name="c", number=1))
    repo.commit()
    user = repo.get_one("c")
    repo.commit()  # (SQLite: no snapshot held, so the UPDATE is what finds the row gone)
    other = open_repository()
    other.delete("c")
    other.commit()
    user.number = 3

    with pytest.raises(TransientDatabaseError) as raised:
        repo.commit()

    assert type(raised.value) is TransientDatabaseError
    assert str(raised.value) == (
        "a user this unit of work changes was deleted or renamed by another unit of work since "
        "it was loaded (UPDATE statement on table 'users' expected to update 1 row(s); 0 were "
        "matched.); the unit of work was rolled back"
    )
    assert stored() == []


def test_adding_back_a_user_replaced_as_stale_whose_row_is_gone_stores_it_again(
    repo: UserRepository, open_repository: Opener, stored: Stored
):
    user = repo.add(User(name="x", number=1))
    repo.commit()
    other = open_repository()
    other.delete("x")
    other.commit()
    repo.get("x")
    replacement = repo.add(User(name="x", number=7))  # the stale user leaves the unit of work
    repo.commit()
    other.delete("x")
    other.commit()

    assert repo.add(user) is user  # an INSERT, as for any user of an earlier unit of work
    repo.commit()

    assert stored() == [("x", 1)]
    assert (replacement.name, replacement.number) == ("x", 7)


@pytest.mark.parametrize(
    ("staged", "named"),
    [
        (["z", "b"], "b"),  # two taken names: the first in code-point order
        (["x", "y", "x"], "x"),  # a name staged twice comes first
        (["new", "y", "b"], "b"),
    ],
)
def test_a_flush_that_hits_duplicates_names_them_as_the_real_ledger_does(
    repo: UserRepository, stored: Stored, staged: list[str], named: str
):
    repo.add_many([("b", 0), ("y", 0), ("z", 0)])
    repo.commit()
    for name in staged:
        repo.add(User(name=name, number=1))

    with pytest.raises(DuplicateUserError) as raised:
        repo.commit()

    assert raised.value.name == named
    assert stored() == [("b", 0), ("y", 0), ("z", 0)]


def test_a_flush_duplicate_names_a_name_this_unit_of_work_wrote_before_a_committed_one(
    repo: UserRepository, stored: Stored
):
    repo.add_many([("a", 0), ("k", 0)])
    repo.commit()
    renamed = repo.get_one("k")
    repo.add(User(name="w", number=1))
    repo.count()  # "w" is written by this unit of work
    repo.add(User(name="a", number=1))
    renamed.name = "w"

    with pytest.raises(DuplicateUserError) as raised:
        repo.commit()

    assert raised.value.name == "w"
    assert (renamed.name, renamed.number) == ("k", 0)
    assert stored() == [("a", 0), ("k", 0)]


def test_after_a_bulk_write_staged_names_are_looked_up_before_the_flush(
    repo: UserRepository, stored: Stored
):
    repo.add_many([("y", 0)])
    repo.commit()
    repo.add_many([("bulk", 1)])
    for name in ["x", "y", "x"]:
        repo.add(User(name=name, number=1))

    with pytest.raises(DuplicateUserError) as raised:
        repo.count()

    assert raised.value.name == "y"  # found stored before the flush, not the repeated "x"
    assert repo.count() == 1
    assert stored() == [("y", 0)]


def test_a_rolled_back_rename_leaves_no_trace_of_the_names_the_user_took(
    repo: UserRepository, stored: Stored
):
    repo.add_many([("a", 1), ("x", 2)])
    repo.commit()
    user = repo.get_one("a")
    user.name = "b"
    repo.count()  # the rename to "b" is flushed
    user.name = "x"
    with pytest.raises(DuplicateUserError) as raised:
        repo.count()
    assert raised.value.name == "x"
    assert (user.name, user.number) == ("a", 1)

    repo.upsert_many([("b", 5)])

    assert (user.name, user.number) == ("a", 1)
    assert repo.get("b") is not user
    assert repo.get("a") is user
    repo.commit()
    assert stored() == [("a", 1), ("b", 5), ("x", 2)]
