"""The names apps import from ``userstore``."""

from __future__ import annotations

import inspect

import pytest

import userstore
from userstore import (
    DatabaseError,
    DuplicateUserError,
    InvalidUserError,
    SchemaOutOfDateError,
    TransientDatabaseError,
    UserNotFoundError,
    UserStoreError,
)


def test_all_lists_every_public_name_and_nothing_else():
    public = {
        name
        for name, value in vars(userstore).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(userstore.__all__) == public


@pytest.mark.parametrize("name", userstore.__all__)
def test_every_exported_name_is_documented(name: str):
    assert inspect.getdoc(getattr(userstore, name))


@pytest.mark.parametrize(
    "error",
    [
        InvalidUserError,
        UserNotFoundError,
        DuplicateUserError,
        DatabaseError,
        TransientDatabaseError,
        SchemaOutOfDateError,
    ],
)
def test_every_error_derives_from_user_store_error(error: type[Exception]):
    assert issubclass(error, UserStoreError)


def test_not_found_and_duplicate_errors_carry_the_name():
    assert UserNotFoundError("Jenny").name == "Jenny"
    assert DuplicateUserError("Jenny").name == "Jenny"
    assert issubclass(UserNotFoundError, LookupError)
    assert issubclass(TransientDatabaseError, DatabaseError)
