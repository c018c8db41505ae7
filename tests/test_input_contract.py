"""Bad input is refused before any SQL; good edge-case input round-trips exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from userstore import InvalidUserError, User, UserRepository

Stored = Callable[[], list[tuple[str, int | None]]]

INVALID_NAMES = ["", "x" * 256, "Jen\x00ny", "tab\there", "a\ud800", None, 7, b"bytes"]
INVALID_NUMBERS = [1.5, "12abc", "12", True, 2**31, -(2**31) - 1, 2**63]


@pytest.fixture
def seeded(repo: UserRepository, sent_sql) -> UserRepository:
    repo.add(User(name="Jenny", number=1))
    repo.commit()
    repo.session.expunge_all()
    sent_sql.clear()
    return repo


def _calls_with_name(repo: UserRepository, name: object) -> list[Callable[[], object]]:
    calls: list[Callable[[], object]] = [
        lambda: repo.get(name),  # type: ignore[arg-type]
        lambda: repo.get_one(name),  # type: ignore[arg-type]
        lambda: repo.exists(name),  # type: ignore[arg-type]
        lambda: repo.delete(name),  # type: ignore[arg-type]
    ]
    if name is not None:  # list(after=None) means "from the first user"
        calls.append(lambda: repo.list(after=name))  # type: ignore[arg-type]
    return calls


@pytest.mark.parametrize("name", INVALID_NAMES, ids=repr)
def test_every_call_refuses_an_invalid_name_before_sending_sql(
    seeded: UserRepository, sent_sql, stored: Stored, name: object
):
    for call in _calls_with_name(seeded, name):
        with pytest.raises(InvalidUserError):
            call()

    assert sent_sql.statements == []
    assert stored() == [("Jenny", 1)]


@pytest.mark.parametrize("number", INVALID_NUMBERS, ids=repr)
def test_an_invalid_number_is_refused_on_construction_and_on_update(
    seeded: UserRepository, sent_sql, stored: Stored, number: object
):
    with pytest.raises(InvalidUserError):
        User(name="Ann", number=number)  # type: ignore[arg-type]
    jenny = seeded.get_one("Jenny")
    sent_sql.clear()

    with pytest.raises(InvalidUserError):
        jenny.number = number  # type: ignore[assignment]
    seeded.commit()

    assert [s for s in sent_sql.statements if "UPDATE" in s.upper()] == []
    assert stored() == [("Jenny", 1)]


def test_add_refuses_a_user_without_a_name_before_sending_sql(
    seeded: UserRepository, sent_sql, stored: Stored
):
    with pytest.raises(InvalidUserError, match="name is required"):
        seeded.add(User(number=3))

    assert sent_sql.statements == []
    assert stored() == [("Jenny", 1)]


def test_add_refuses_something_that_is_not_a_user(seeded: UserRepository):
    with pytest.raises(InvalidUserError, match="add\\(\\) takes a User, got dict"):
        seeded.add({"name": "Ann", "number": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("commit_the_delete", [False, True], ids=["flushed", "committed"])
def test_adding_a_deleted_user_again_is_refused_and_a_new_user_takes_the_name(
    repo: UserRepository, stored, commit_the_delete: bool
):
    jenny = repo.add(User(name="Jenny", number=1))
    repo.commit()
    repo.delete("Jenny")
    if commit_the_delete:
        repo.commit()

    with pytest.raises(InvalidUserError, match="'Jenny' was deleted; build a new User"):
        repo.add(jenny)

    repo.add(User(name="Jenny", number=2))  # the unit of work goes on
    repo.commit()
    assert stored() == [("Jenny", 2)]


@pytest.mark.parametrize("limit", [-1, 2.5, "3", 2**63, 10**30], ids=repr)
def test_list_refuses_an_invalid_limit_before_sending_sql(
    seeded: UserRepository, sent_sql, limit: object
):
    with pytest.raises(InvalidUserError, match="limit"):
        seeded.list(limit=limit)  # type: ignore[arg-type]

    assert sent_sql.statements == []


@pytest.mark.parametrize(
    "name",
    ["x" * 255, "😀" * 255, "é" * 255, "O'Brien", '"; DROP TABLE users; --', "100%_", "a\\b"],
    ids=["255-ascii", "255-emoji", "255-accented", "quote", "sql", "percent", "backslash"],
)
def test_names_at_the_limits_round_trip_exactly(repo: UserRepository, stored: Stored, name: str):
    repo.add(User(name=name, number=1))
    repo.commit()
    repo.session.expunge_all()

    assert repo.get_one(name).name == name
    assert stored() == [(name, 1)]


@pytest.mark.parametrize("number", [-(2**31), 2**31 - 1, 0, None])
def test_numbers_at_the_limits_round_trip_exactly(
    repo: UserRepository, stored: Stored, number: int | None
):
    repo.add(User(name="edge", number=number))
    repo.commit()
    repo.session.expunge_all()

    assert repo.get_one("edge").number == number
    assert stored() == [("edge", number)]


HOSTILE_NAMES = [
    "O'Brien",
    'say "hi"',
    "Robert'); DROP TABLE users;--",
    "' OR '1'='1",
    "100%",
    "%_%",
    "back\\slash\\",
    "\\x00 not a NUL",
    "😀👩\u200d💻",
    "\u202eRTL override",
    "\u200fright-to-left mark",
    "e\u0301\u0301\u0301 combining",
    "\ufeffBOM",
    "مرحبا",
    "\uffff",
    "\U0001d518\U0001d52b\U0001d526 (Fraktur, outside the BMP)",
]


def test_hostile_names_are_stored_and_found_exactly(repo: UserRepository, stored: Stored):
    for number, name in enumerate(HOSTILE_NAMES):
        repo.add(User(name=name, number=number))
    repo.commit()
    repo.session.expunge_all()

    assert stored() == sorted((name, n) for n, name in enumerate(HOSTILE_NAMES))
    assert [u.name for u in repo.list()] == sorted(HOSTILE_NAMES)
    for number, name in enumerate(HOSTILE_NAMES):
        assert repo.exists(name)
        assert repo.get_one(name).number == number
    assert repo.get("%") is None
    assert repo.exists("O") is False
