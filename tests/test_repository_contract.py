"""The repository contract, run identically on SQLite, PostgreSQL and MariaDB, sync and async."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from userstore import DuplicateUserError, User, UserNotFoundError, UserRepository

Stored = Callable[[], list[tuple[str, int | None]]]
Opener = Callable[[], UserRepository]


def test_add_stages_the_user_without_sending_sql(repo: UserRepository, sent_sql, stored: Stored):
    repo.add(User(name="Jenny", number=8675309))

    assert sent_sql.statements == []
    assert stored() == []


def test_get_autoflushes_and_returns_the_very_object_added(repo: UserRepository):
    jenny = repo.add(User(name="Jenny", number=8675309))

    assert repo.get("Jenny") is jenny


def test_commit_writes_the_unit_of_work_and_empties_session_new(
    repo: UserRepository, stored: Stored
):
    repo.add(User(name="Jenny", number=8675309))
    repo.add(User(name="Ann", number=None))
    repo.commit()

    assert not repo.session.new
    assert stored() == [("Ann", None), ("Jenny", 8675309)]


def test_get_after_commit_returns_the_stored_user(repo: UserRepository, open_repository: Opener):
    repo.add(User(name="Jenny", number=8675309))
    repo.commit()

    found = open_repository().get("Jenny")
    assert repr(found) == "User(name=Jenny, number=8675309)"


def test_get_returns_none_for_a_missing_user(repo: UserRepository):
    assert repo.get("nobody") is None


def test_get_one_raises_user_not_found_carrying_the_name(repo: UserRepository):
    with pytest.raises(UserNotFoundError) as raised:
        repo.get_one("nobody")

    assert raised.value.name == "nobody"
    assert isinstance(raised.value, LookupError)


def test_get_one_returns_a_stored_user(repo: UserRepository):
    repo.add(User(name="Jenny", number=1))
    repo.commit()

    assert repo.get_one("Jenny").number == 1


@pytest.mark.not_on_fake(reason="it checks the SQL statement sent (EXISTS, not COUNT)")
def test_exists_sends_an_exists_query_not_a_count(repo: UserRepository, sent_sql):
    repo.add(User(name="Jenny", number=1))
    repo.commit()
    sent_sql.clear()

    assert repo.exists("Jenny") is True
    assert repo.exists("Jen") is False
    selects = [s for s in sent_sql.statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2
    assert all("EXISTS" in s.upper() and "COUNT(" not in s.upper() for s in selects)


def test_count_includes_staged_users(repo: UserRepository):
    repo.add(User(name="a", number=1))
    repo.commit()
    repo.add(User(name="b", number=2))

    assert repo.count() == 2


def test_updating_a_number_is_assignment_then_commit(repo: UserRepository, stored: Stored):
    repo.add(User(name="Jenny", number=1))
    repo.commit()

    repo.get_one("Jenny").number = 5
    repo.commit()

    assert stored() == [("Jenny", 5)]


def test_delete_removes_the_user_on_commit(repo: UserRepository, stored: Stored):
    repo.add(User(name="Jenny", number=1))
    repo.add(User(name="Ann", number=2))
    repo.commit()

    repo.delete("Jenny")
    assert repo.get("Jenny") is None
    assert repo.exists("Jenny") is False
    repo.commit()

    assert stored() == [("Ann", 2)]


def test_delete_of_a_missing_user_raises_user_not_found(repo: UserRepository):
    with pytest.raises(UserNotFoundError) as raised:
        repo.delete("nobody")

    assert raised.value.name == "nobody"


def test_rollback_discards_staged_users_and_deletions(repo: UserRepository, stored: Stored):
    repo.add(User(name="Jenny", number=1))
    repo.commit()
    repo.add(User(name="Ann", number=2))
    repo.delete("Jenny")

    repo.rollback()

    assert repo.get("Ann") is None
    assert repo.get_one("Jenny").number == 1
    assert stored() == [("Jenny", 1)]


def test_duplicate_raised_by_commit_rolls_back_the_whole_unit_of_work(
    repo: UserRepository, stored: Stored
):
    repo.add(User(name="Jenny", number=1))
    repo.commit()
    repo.add(User(name="Ann", number=2))
    repo.add(User(name="Zed", number=3))
    repo.add(User(name="Jenny", number=4))  # the first Jenny is no longer in memory

    with pytest.raises(DuplicateUserError) as raised:
        repo.commit()

    assert raised.value.name == "Jenny"
    assert stored() == [("Jenny", 1)]
    assert not repo.session.new


def test_duplicate_against_a_user_stored_by_another_session_is_raised_by_commit(
    repo: UserRepository, open_repository: Opener, stored: Stored
):
    other = open_repository()
    other.add(User(name="Jenny", number=1))
    other.commit()
    repo.add(User(name="Ann", number=2))
    repo.add(User(name="Jenny", number=3))

    with pytest.raises(DuplicateUserError) as raised:
        repo.commit()

    assert raised.value.name == "Jenny"
    assert stored() == [("Jenny", 1)]


def test_duplicate_is_raised_by_the_autoflush_of_a_read(repo: UserRepository, stored: Stored):
    repo.add(User(name="Jenny", number=1))
    repo.commit()
    repo.session.expunge_all()
    repo.add(User(name="Ann", number=2))
    repo.add(User(name="Jenny", number=3))

    with pytest.raises(DuplicateUserError) as raised:
        repo.list()

    assert raised.value.name == "Jenny"
    assert stored() == [("Jenny", 1)]


def test_a_name_staged_twice_in_one_unit_of_work_is_a_duplicate(
    repo: UserRepository, stored: Stored
):
    repo.add(User(name="Ann", number=1))
    repo.add(User(name="Jenny", number=2))
    repo.add(User(name="Jenny", number=3))

    with pytest.raises(DuplicateUserError) as raised:
        repo.count()

    assert raised.value.name == "Jenny"
    assert stored() == []


@pytest.mark.parametrize("failing_call", ["commit", "get", "exists", "count", "list"])
def test_repository_is_usable_right_after_a_duplicate(
    repo: UserRepository, stored: Stored, failing_call: str
):
    repo.add(User(name="Jenny", number=1))
    repo.commit()
    repo.session.expunge_all()
    repo.add(User(name="Jenny", number=2))
    call = {
        "commit": repo.commit,
        "get": lambda: repo.get("x"),
        "exists": lambda: repo.exists("x"),
        "count": repo.count,
        "list": repo.list,
    }[failing_call]
    with pytest.raises(DuplicateUserError):
        call()

    repo.add(User(name="Ann", number=3))
    repo.commit()

    assert repo.get_one("Jenny").number == 1
    assert stored() == [("Ann", 3), ("Jenny", 1)]


def test_re_adding_a_user_deleted_by_another_session_succeeds(
    repo: UserRepository, open_repository: Opener, stored: Stored
):
    jenny = repo.add(User(name="Jenny", number=1))
    repo.commit()
    assert jenny.number == 1  # loads it again: this session holds a live Jenny
    repo.rollback()  # end the read (on SQLite it holds the write lock)
    other = open_repository()
    other.delete("Jenny")
    other.commit()
    repo.session.expire_all()

    repo.add(User(name="Jenny", number=2))
    repo.commit()

    assert stored() == [("Jenny", 2)]


def test_adding_the_same_object_twice_is_harmless(repo: UserRepository, stored: Stored):
    jenny = repo.add(User(name="Jenny", number=1))
    repo.commit()

    assert repo.add(jenny) is jenny
    repo.commit()

    assert stored() == [("Jenny", 1)]


def test_a_duplicate_of_a_user_written_earlier_in_the_transaction_is_named(
    repo: UserRepository, stored: Stored
):
    repo.add(User(name="jenny", number=1))
    repo.count()  # flushed, not committed: the rollback will take it back
    repo.add(User(name="Jenny", number=2))
    repo.add(User(name="jenny", number=3))

    with pytest.raises(DuplicateUserError) as raised:
        repo.commit()

    assert raised.value.name == "jenny"
    assert stored() == []


def test_a_duplicate_is_named_right_after_another_user_was_deleted_in_the_transaction(
    repo: UserRepository, stored: Stored
):
    repo.add(User(name="Jenny", number=1))
    repo.add(User(name="taken", number=2))
    repo.commit()
    repo.session.expunge_all()
    repo.delete("Jenny")  # the rollback will bring Jenny back
    repo.add(User(name="Jenny", number=3))
    repo.add(User(name="taken", number=4))

    with pytest.raises(DuplicateUserError) as raised:
        repo.commit()

    assert raised.value.name == "taken"
    assert stored() == [("Jenny", 1), ("taken", 2)]


def test_read_token_names_the_backend_and_what_was_committed(repo: UserRepository):
    from userstore.positions import parse_token

    repo.add(User(name="Jenny", number=8675309))
    repo.commit()
    first = parse_token(repo.read_token())
    repo.add(User(name="Ann", number=1))
    repo.commit()
    later = parse_token(repo.read_token())

    assert first.backend in ("sqlite", "postgresql", "mariadb", "memory")
    assert first.later(later) == later  # positions only move forward
    assert repo.get("Jenny") is not None  # the repository is still usable
