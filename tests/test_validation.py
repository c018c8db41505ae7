"""Input validation: unit tests of the rules, no database involved."""

from __future__ import annotations

import enum
import re

import pytest

from userstore import InvalidUserError, User, UserStoreError
from userstore.validation import validate_limit, validate_name, validate_number


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "name must not be empty"),
        ("x" * 256, "name must be at most 255 characters, got 256"),
        ("Jen\x00ny", "control characters, found U+0000 at position 3"),
        ("Jen\nny", "found U+000A"),
        ("\x7f", "found U+007F"),
        ("a\x85", "found U+0085"),
        ("a\ud800b", "encodable as UTF-8, found U+D800"),
        (None, "name must be a str, got NoneType"),
        (b"Jenny", "name must be a str, got bytes"),
        (42, "name must be a str, got int"),
    ],
)
def test_invalid_names_are_rejected_with_an_actionable_message(name: object, message: str):
    with pytest.raises(InvalidUserError, match=re.escape(message)):
        validate_name(name)


@pytest.mark.parametrize("name", ["J", "x" * 255, "Jénny", "😀" * 255, "a b", "'; DROP TABLE"])
def test_valid_names_pass_unchanged(name: str):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("number", "message"),
    [
        (1.5, "number must be an int or None, got float"),
        (2.0, "got float"),
        ("12abc", "got str"),
        ("12", "got str"),
        (True, "got bool"),
        (2**31, "number must be between -2147483648 and 2147483647, got 2147483648"),
        (-(2**31) - 1, "got -2147483649"),
        (2**63, "got 9223372036854775808"),
    ],
)
def test_invalid_numbers_are_rejected_with_an_actionable_message(number: object, message: str):
    with pytest.raises(InvalidUserError, match=re.escape(message)):
        validate_number(number)


@pytest.mark.parametrize("number", [None, 0, -(2**31), 2**31 - 1, 8675309])
def test_valid_numbers_pass(number: int | None):
    assert validate_number(number) == number


def test_int_subclasses_are_stored_as_plain_ints():
    class Level(enum.IntEnum):
        HIGH = 3

    stored = validate_number(Level.HIGH)
    assert stored == 3
    assert type(stored) is int


def test_invalid_user_error_is_also_a_value_error():
    assert issubclass(InvalidUserError, ValueError)
    assert issubclass(InvalidUserError, UserStoreError)


def test_the_constructor_validates_its_keywords():
    with pytest.raises(InvalidUserError, match="at most 255"):
        User(name="x" * 300, number=1)
    with pytest.raises(InvalidUserError, match="got float"):
        User(name="Jenny", number=1.5)


def test_assignment_validates_too():
    jenny = User(name="Jenny", number=1)

    with pytest.raises(InvalidUserError, match="got str"):
        jenny.number = "12abc"  # type: ignore[assignment]
    assert jenny.number == 1


@pytest.mark.parametrize("limit", [-1, 1.5, "10", True])
def test_invalid_limits_are_rejected(limit: object):
    with pytest.raises(InvalidUserError, match="limit"):
        validate_limit(limit)


def test_repr_matches_the_notebook():
    assert repr(User(name="Jenny", number=8675309)) == "User(name=Jenny, number=8675309)"
