"""Exact name comparison, code-point order and keyset paging on the primary-key index."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, event, text

from tests.flavours import FlavouredEngine
from userstore import User, UserRepository

Stored = Callable[[], list[tuple[str, int | None]]]
LOOKALIKES = ["Jenny", "jenny", "Jenny ", "Jénny", "Je\u0301nny", "JENNY"]
MIXED = ["b", "B", "a", "Z", "é", "e\u0301", "😀", "\uffff", "Ω", " lead", "tail ", "0", "~"]


def test_names_that_differ_in_case_accent_or_trailing_space_are_different_users(
    repo: UserRepository, stored: Stored
):
    for number, name in enumerate(LOOKALIKES):
        repo.add(User(name=name, number=number))
    repo.commit()
    repo.session.expunge_all()

    assert stored() == sorted((name, n) for n, name in enumerate(LOOKALIKES))
    for number, name in enumerate(LOOKALIKES):
        assert repo.get_one(name).number == number
    assert repo.get("JeNNy") is None
    assert repo.exists("Jenny  ") is False


def test_list_returns_users_in_unicode_code_point_order(repo: UserRepository):
    for name in MIXED:
        repo.add(User(name=name, number=None))
    repo.commit()

    assert [user.name for user in repo.list()] == sorted(MIXED)


def test_keyset_pages_cover_every_user_once_in_order(repo: UserRepository):
    names = [f"user{i:03d}" for i in range(25)] + MIXED
    for name in names:
        repo.add(User(name=name, number=None))
    repo.commit()

    pages: list[list[str]] = []
    after = None
    while page := repo.list(after=after, limit=7):
        pages.append([user.name for user in page])
        after = page[-1].name

    assert [name for page in pages for name in page] == sorted(names)
    assert all(len(page) == 7 for page in pages[:-1])


def test_after_is_strictly_greater_and_limit_zero_is_empty(repo: UserRepository):
    for name in ["a", "b", "c"]:
        repo.add(User(name=name, number=None))
    repo.commit()

    assert [u.name for u in repo.list(after="a")] == ["b", "c"]
    assert [u.name for u in repo.list(after="a ", limit=1)] == ["b"]
    assert repo.list(after="c") == []
    assert repo.list(limit=0) == []


def _captured_select(engine: Engine, action: Callable[[], object]) -> tuple[str, object]:
    captured: list[tuple[str, object]] = []

    def record(_c: object, _cur: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(captured) == 1
    return captured[0]


def _plan(backend: str, engine: FlavouredEngine, statement: str, parameters: object) -> str:
    with engine.connect() as connection:  # the driver that sent the statement explains it
        if backend == "postgresql":
            connection.exec_driver_sql("ANALYZE users")
            rows = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            return json.dumps(rows.scalar())
        if backend == "mariadb":
            connection.exec_driver_sql("ANALYZE TABLE users")
            rows = connection.exec_driver_sql(f"EXPLAIN FORMAT=JSON {statement}", parameters)
            return str(rows.scalar())
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return json.dumps([row[-1] for row in rows])


def _assert_uses_primary_key_without_sorting(backend: str, plan: str) -> None:
    if backend == "postgresql":
        assert '"Index Name": "pk_users"' in plan, plan
        assert '"Sort"' not in plan, plan
        assert "Seq Scan" not in plan, plan
    elif backend == "mariadb":
        assert '"key": "PRIMARY"' in plan, plan
        assert "filesort" not in plan, plan
        assert '"access_type": "ALL"' not in plan, plan
    else:
        assert "USING INDEX sqlite_autoindex_users_1" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        assert "SCAN users" not in plan.replace("SCAN users USING INDEX", ""), plan


@pytest.fixture
def thousands_of_users(repo: UserRepository) -> UserRepository:
    for i in range(3000):
        repo.add(User(name=f"user{i:05d}", number=i))
    repo.commit()
    return repo


@pytest.mark.not_on_fake(reason="it reads the database's query plan (EXPLAIN)")
def test_a_list_page_reads_the_primary_key_index_in_order_without_a_sort(
    backend: str, flavoured_engine: FlavouredEngine, thousands_of_users: UserRepository
):
    statement, parameters = _captured_select(
        flavoured_engine.sync_engine, lambda: thousands_of_users.list(after="user01500", limit=20)
    )

    _assert_uses_primary_key_without_sorting(
        backend, _plan(backend, flavoured_engine, statement, parameters)
    )


@pytest.mark.not_on_fake(reason="it reads the database's query plan (EXPLAIN)")
def test_a_get_reads_the_primary_key_index(
    backend: str, flavoured_engine: FlavouredEngine, thousands_of_users: UserRepository
):
    thousands_of_users.session.expunge_all()
    statement, parameters = _captured_select(
        flavoured_engine.sync_engine, lambda: thousands_of_users.get("user02000")
    )

    plan = _plan(backend, flavoured_engine, statement, parameters)
    if backend == "mariadb":
        assert '"key": "PRIMARY"' in plan, plan
        assert '"access_type": "const"' in plan, plan
    else:
        _assert_uses_primary_key_without_sorting(backend, plan)


def test_the_schema_pins_each_backends_binary_collation(backend: str, plain_engine: Engine):
    queries = {
        "postgresql": (
            "SELECT collation_name FROM information_schema.columns "
            "WHERE table_name = 'users' AND column_name = 'name'"
        ),
        "mariadb": (
            "SELECT collation_name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = 'users' AND column_name = 'name'"
        ),
        "sqlite": "SELECT sql FROM sqlite_master WHERE name = 'users'",
    }
    with plain_engine.connect() as connection:
        found = str(connection.execute(text(queries[backend])).scalar())

    expected = {"postgresql": "C", "mariadb": "utf8mb4_nopad_bin", "sqlite": 'COLLATE "BINARY"'}
    assert expected[backend] in found
