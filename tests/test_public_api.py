"""The names apps import from ``userstore``."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from collections.abc import Callable

import pytest

import userstore
from userstore import (
    AsyncUserRepository,
    AsyncUserStream,
    DatabaseError,
    DuplicateUserError,
    InvalidUserError,
    SchemaOutOfDateError,
    TransientDatabaseError,
    UserNotFoundError,
    UserRepository,
    UserStoreError,
    migrations,
)

# Each public function of the sync API and its async twin, as apps import them.
ASYNC_TWINS = [
    (userstore.create_engine, userstore.create_async_engine),
    (userstore.create_session_factory, userstore.create_async_session_factory),
    (migrations.upgrade, migrations.upgrade_async),
    (migrations.current, migrations.current_async),
    (migrations.check, migrations.check_async),
    (migrations.assert_current, migrations.assert_current_async),
    (userstore.run_unit_of_work, userstore.run_unit_of_work_async),
]


def test_all_lists_every_public_name_and_nothing_else():
    public = {
        name
        for name, value in vars(userstore).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    # All but the errors load on first use (the async twin's need the asyncio extra).
    assert set(userstore.__all__) == public | set(userstore._LAZY_NAMES)


def test_importing_userstore_loads_neither_sqlalchemy_nor_alembic():
    # The command line's start: a Ctrl-C there must still end in one line.
    code = (
        "import sys, userstore; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'alembic'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


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


def _verbs(repository: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(repository).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


def _parameters(signature: inspect.Signature) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults: what a caller writes (annotations name other types)."""
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_the_async_repository_has_every_verb_of_the_sync_one_with_the_same_parameters():
    sync_verbs, async_verbs = _verbs(UserRepository), _verbs(AsyncUserRepository)

    assert sorted(async_verbs) == sorted(sync_verbs)
    for name, signature in sync_verbs.items():
        assert _parameters(async_verbs[name]) == _parameters(signature), name


@pytest.mark.parametrize("name", sorted(set(_verbs(UserRepository)) - {"iter_all"}))
def test_every_async_repository_verb_but_iter_all_is_a_coroutine(name: str):
    assert inspect.iscoroutinefunction(getattr(AsyncUserRepository, name))


def test_the_async_iter_all_returns_an_async_stream_that_can_be_closed():
    assert typing.get_type_hints(AsyncUserRepository.iter_all)["return"] is AsyncUserStream
    for method in ("__aiter__", "__anext__", "__aenter__", "__aexit__", "aclose"):
        assert callable(getattr(AsyncUserStream, method)), method


@pytest.mark.parametrize(("sync", "twin"), ASYNC_TWINS, ids=lambda function: function.__name__)
def test_every_async_twin_is_documented_and_takes_what_its_sync_function_takes(
    sync: Callable[..., object], twin: Callable[..., object]
):
    assert inspect.getdoc(twin)
    assert [name for name, _, _ in _parameters(inspect.signature(twin))] == [
        name for name, _, _ in _parameters(inspect.signature(sync))
    ]
