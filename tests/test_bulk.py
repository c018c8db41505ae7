"""Bulk writes, upserts and streaming reads: the same contract on every backend."""

from __future__ import annotations

import multiprocessing
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import URL, Engine, text

import userstore
from tests.databases import worker_engine_options
from userstore import (
    DuplicateUserError,
    InvalidUserError,
    UpsertResult,
    User,
    UserRepository,
)

Stored = Callable[[], list[tuple[str, int | None]]]


def _rows(count: int, prefix: str = "user") -> Iterator[tuple[str, int]]:
    return ((f"{prefix}{i:07d}", i) for i in range(count))


def test_add_many_takes_users_pairs_and_mappings_and_commits_with_the_unit_of_work(
    repo: UserRepository, stored: Stored
):
    inserted = repo.add_many(
        [User(name="Ann", number=1), ("Bob", None), {"name": "Cy", "number": 3}, {"name": "Di"}]
    )

    assert inserted == 4
    assert repo.count() == 4  # read-your-writes before the commit
    assert stored() == []
    repo.commit()
    assert stored() == [("Ann", 1), ("Bob", None), ("Cy", 3), ("Di", None)]


def test_add_many_is_rolled_back_with_its_unit_of_work(repo: UserRepository, stored: Stored):
    repo.add(User(name="staged", number=0))
    repo.add_many(_rows(50))

    repo.rollback()

    assert stored() == []
    assert repo.count() == 0


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (("x" * 256, 1), "row 2: name must be at most 255 characters"),
        (("ok", 1.5), "row 2: number must be an int or None, got float"),
        (("nul\x00", 1), "row 2: name must not contain control characters"),
        ({"name": "ok", "numbr": 1}, "row 2: expected a User, a \\(name, number\\) pair"),
        ("just a string", "row 2: expected a User"),
    ],
)
def test_add_many_names_the_position_of_a_bad_row_before_any_sql(
    repo: UserRepository, sent_sql, stored: Stored, bad_row: object, message: str
):
    with pytest.raises(InvalidUserError, match=message):
        repo.add_many([("a", 1), ("b", 2), bad_row])  # type: ignore[list-item]

    assert sent_sql.statements == []
    assert stored() == []


def test_a_bad_row_late_in_a_stream_rolls_the_whole_call_back(repo: UserRepository, stored: Stored):
    def stream() -> Iterator[tuple[str, object]]:
        yield from _rows(25)
        yield ("late", "not a number")

    with pytest.raises(InvalidUserError, match="row 25"):
        repo.add_many(stream(), batch_size=10)  # type: ignore[arg-type]

    assert stored() == []
    repo.add_many(_rows(3))
    repo.commit()
    assert len(stored()) == 3


def test_add_many_of_a_stored_name_writes_nothing_of_the_call(repo: UserRepository, stored: Stored):
    repo.add(User(name="user0000007", number=-1))
    repo.commit()

    with pytest.raises(DuplicateUserError) as raised:
        repo.add_many(_rows(30), batch_size=8)

    assert raised.value.name == "user0000007"
    assert stored() == [("user0000007", -1)]
    assert repo.count() == 1  # usable at once


@pytest.mark.parametrize("batch_size", [100, 3])
def test_add_many_of_a_name_repeated_in_the_input_names_it(
    repo: UserRepository, stored: Stored, batch_size: int
):
    rows = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("b", 5), ("e", 6)]

    with pytest.raises(DuplicateUserError) as raised:
        repo.add_many(rows, batch_size=batch_size)

    assert raised.value.name == "b"
    assert stored() == []


def test_add_many_conflicting_with_a_staged_add_raises_from_add_many(
    repo: UserRepository, stored: Stored
):
    repo.add(User(name="a", number=0))

    with pytest.raises(DuplicateUserError) as raised:
        repo.add_many([("a", 1)])

    assert raised.value.name == "a"
    assert stored() == []


def test_add_many_stores_hostile_names_exactly(repo: UserRepository, stored: Stored):
    names = ["back\\slash", "\\N", "\\\\", "tab\\t not a tab", "O'Brien", "%s", "😀", "e\u0301"]

    repo.add_many((name, i) for i, name in enumerate(names))
    repo.commit()

    assert stored() == sorted((name, i) for i, name in enumerate(names))


@pytest.mark.not_on_fake(reason="the fake keeps its rows in Python memory: they are its database")
def test_add_many_memory_does_not_grow_with_the_input(repo: UserRepository):
    repo.add_many(_rows(2_000, "warm"), batch_size=1_000)

    def peak_for(count: int, prefix: str) -> int:
        tracemalloc.start()
        try:
            repo.add_many(_rows(count, prefix), batch_size=1_000)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak_for(5_000, "s"), peak_for(40_000, "l")

    assert large < small * 1.5 + 256 * 1024, (small, large)


def test_upsert_inserts_then_updates_and_returns_the_stored_user(repo: UserRepository):
    created = repo.upsert("Jenny", 1)
    assert (created.name, created.number) == ("Jenny", 1)
    repo.commit()
    first_update = repo.get_one("Jenny").updated_at
    time.sleep(0.05)

    same = repo.upsert("Jenny", 1)
    assert same.updated_at == first_update  # the number did not change
    changed = repo.upsert("Jenny", 2)
    repo.commit()

    assert changed is same
    assert changed.number == 2
    assert changed.updated_at > first_update
    assert changed.created_at == created.created_at


def test_upsert_many_counts_inserted_updated_and_unchanged(repo: UserRepository, stored: Stored):
    repo.add_many([("keep", 1), ("change", 1), ("null", None)])
    repo.commit()

    result = repo.upsert_many(
        [("keep", 1), ("change", 2), ("null", None), ("new", 5), ("new2", None)], batch_size=2
    )
    repo.commit()

    assert result == UpsertResult(inserted=2, updated=1, unchanged=2)
    assert stored() == [("change", 2), ("keep", 1), ("new", 5), ("new2", None), ("null", None)]


def test_upsert_many_moves_updated_at_only_when_the_number_changes(repo: UserRepository):
    repo.add_many([("same", 1), ("moved", 1)])
    repo.commit()
    before = {u.name: u.updated_at for u in repo.list()}
    time.sleep(0.05)

    repo.upsert_many([("same", 1), ("moved", 2)])
    repo.commit()

    after = {u.name: u.updated_at for u in repo.list()}
    assert after["same"] == before["same"]
    assert after["moved"] - before["moved"] > timedelta(0)


def test_a_name_repeated_within_one_batch_counts_once_with_its_last_number(
    repo: UserRepository, stored: Stored
):
    result = repo.upsert_many([("a", 1), ("a", 2), ("a", 3)])
    repo.commit()

    assert result == UpsertResult(inserted=1, updated=0, unchanged=0)
    assert stored() == [("a", 3)]


def test_bulk_writes_refresh_users_already_loaded_in_the_session(repo: UserRepository):
    repo.add_many([("a", 1), ("b", 2)])
    repo.commit()
    a, b = repo.get_one("a"), repo.get_one("b")
    assert (a.number, b.number) == (1, 2)

    repo.upsert_many([("a", 10), ("b", 2), ("c", 30)])

    assert (a.number, b.number) == (10, 2)
    assert [(u.name, u.number) for u in repo.list()] == [("a", 10), ("b", 2), ("c", 30)]
    assert repo.count() == 3


def test_iter_all_streams_every_user_in_name_order(repo: UserRepository):
    names = [f"n{i:05d}" for i in range(2_500)] + ["Z", "é", "😀"]
    repo.add_many((name, None) for name in names)
    repo.commit()

    assert [user.name for user in repo.iter_all(batch_size=100)] == sorted(names)


def test_iter_all_memory_does_not_grow_with_the_table(repo: UserRepository):
    repo.add_many(_rows(30_000))
    repo.commit()

    def peak_reading(limit: int) -> int:
        repo.session.expunge_all()
        tracemalloc.start()
        try:
            for seen, _user in enumerate(repo.iter_all(batch_size=500), start=1):
                if seen == limit:
                    break
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            repo.rollback()

    small, large = peak_reading(3_000), peak_reading(30_000)

    assert large < small * 1.5 + 512 * 1024, (small, large)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, 2**63, 10**30])
def test_bulk_calls_refuse_a_bad_batch_size(repo: UserRepository, batch_size: object):
    with pytest.raises(InvalidUserError, match="batch_size"):
        repo.add_many([("a", 1)], batch_size=batch_size)  # type: ignore[arg-type]
    with pytest.raises(InvalidUserError, match="batch_size"):
        repo.upsert_many([("a", 1)], batch_size=batch_size)  # type: ignore[arg-type]
    with pytest.raises(InvalidUserError, match="batch_size"):
        next(repo.iter_all(batch_size=batch_size))  # type: ignore[arg-type]


def test_the_largest_batch_size_and_limit_every_backend_takes_are_accepted(
    repo: UserRepository, stored: Stored
):
    largest = 2**63 - 1

    assert repo.add_many([("a", 1), ("b", 2)], batch_size=largest) == 2
    assert repo.upsert_many([("b", 3)], batch_size=largest).updated == 1
    repo.commit()

    assert [user.name for user in repo.iter_all(batch_size=largest)] == ["a", "b"]
    assert [user.name for user in repo.list(limit=largest)] == ["a", "b"]
    assert stored() == [("a", 1), ("b", 3)]


def _upsert_rounds(
    url: str, options: dict[str, Any], worker: int, names: list[str], rounds: int
) -> None:
    engine = userstore.create_engine(url, **options)
    try:
        with userstore.create_session_factory(engine)() as session:
            repo = UserRepository(session)
            # Each worker sends the names in an order of its own: rows locked in input
            # order would deadlock; upserts lock them in name order.
            shift = worker * len(names) // 4
            mine = names[shift:] + names[:shift]
            for round_ in range(rounds):
                repo.upsert_many((name, worker * 1000 + round_) for name in mine)
                repo.commit()
    finally:
        engine.dispose()


@pytest.mark.not_on_fake(
    reason=(
        "its writers are OS processes sharing a database server; the fake lives"
        " in one process (threads race on it in tests/test_fake.py)"
    )
)
def test_concurrent_upserts_of_the_same_names_neither_fail_nor_lose_rows(
    backend: str, database_url: URL, plain_engine: Engine, empty_table: None
):
    names = [f"shared{i:03d}" for i in range(200)]
    spawn = multiprocessing.get_context("spawn")
    url = database_url.render_as_string(hide_password=False)
    options = worker_engine_options(backend)
    workers = [
        spawn.Process(target=_upsert_rounds, args=(url, options, w, names, 10)) for w in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)

    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    with plain_engine.connect() as connection:
        rows = connection.execute(text("SELECT name, number FROM users")).all()
    assert sorted(name for name, _ in rows) == names
    # Every row holds a value one worker wrote: no error, no lost or phantom row.
    written = {worker * 1000 + round_ for worker in range(4) for round_ in range(10)}
    assert {number for _, number in rows} <= written


def test_an_upsert_inside_an_iter_all_loop_writes_and_the_loop_goes_on(
    repo: UserRepository, stored: Stored
):
    repo.add_many([("a", 1), ("b", 2), ("c", 3)])
    repo.commit()

    for user in repo.iter_all(batch_size=1):
        repo.upsert_many([(user.name, user.number + 100)])
    repo.commit()

    assert stored() == [("a", 101), ("b", 102), ("c", 103)]


def test_a_commit_inside_an_iter_all_loop_does_not_end_it(repo: UserRepository, stored: Stored):
    repo.add_many((f"u{i:03d}", i) for i in range(300))
    repo.commit()
    seen = []

    for user in repo.iter_all(batch_size=40):
        seen.append(user.name)
        if len(seen) == 50:
            repo.add(User(name="zzz", number=0))  # sorts last: yielded in a later page
            repo.commit()

    assert seen == [f"u{i:03d}" for i in range(300)] + ["zzz"]
    assert len(stored()) == 301
