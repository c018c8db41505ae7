"""What only the in-memory fake has: one store shared by many units of work, across threads.

The fake's repository contract is checked by the contract suite itself (the
``memory`` target of every contract test); these tests cover the store.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.test_readme import readme_blocks
from userstore import (
    DuplicateUserError,
    InvalidUserError,
    TransientDatabaseError,
    User,
    UserRepository,
)
from userstore.testing import (
    AsyncInMemoryUserRepository,
    InMemoryUserRepository,
    InMemoryUserStore,
)


@pytest.fixture
def store() -> InMemoryUserStore:
    return InMemoryUserStore()


def test_repositories_of_one_store_share_what_is_committed_and_nothing_else(
    store: InMemoryUserStore,
):
    writer, reader = store.repository(), store.repository()
    writer.add(User(name="Jenny", number=1))
    writer.count()  # flushed into the writer's unit of work, not committed

    assert reader.get("Jenny") is None
    assert reader.count() == 0
    writer.commit()
    assert reader.get_one("Jenny").number == 1
    assert [(row.name, row.number) for row in store.rows()] == [("Jenny", 1)]


def test_two_stores_are_two_databases():
    first, second = InMemoryUserStore(), InMemoryUserStore()
    repo = first.repository()
    repo.add(User(name="Jenny", number=1))
    repo.commit()

    assert second.repository().count() == 0
    assert first.rows()[0].name == "Jenny"


def test_a_name_committed_by_another_unit_of_work_meanwhile_fails_the_commit(
    store: InMemoryUserStore,
):
    late, early = store.repository(), store.repository()
    late.add(User(name="Ann", number=1))
    late.add(User(name="Jenny", number=1))
    late.count()  # flushed here while the name was free
    early.add(User(name="Jenny", number=2))
    early.commit()

    with pytest.raises(DuplicateUserError) as raised:
        late.commit()

    assert raised.value.name == "Jenny"
    assert [(row.name, row.number) for row in store.rows()] == [("Jenny", 2)]
    late.add(User(name="Ann", number=1))  # usable at once
    late.commit()
    assert len(store.rows()) == 2


def test_a_user_changed_here_and_deleted_by_another_unit_fails_the_commit_as_transient(
    store: InMemoryUserStore,
):
    setup = store.repository()
    setup.add_many([("a", 1), ("b", 2)])
    setup.commit()
    here, there = store.repository(), store.repository()
    user = here.get_one("a")
    user.number = 10
    here.count()  # the update is flushed into this unit of work
    there.delete("a")
    there.commit()

    with pytest.raises(TransientDatabaseError, match="deleted or renamed"):
        here.commit()

    assert [(row.name, row.number) for row in store.rows()] == [("b", 2)]
    assert here.get("a") is None  # the retry sees why


def test_upserts_racing_in_two_units_of_work_both_land(store: InMemoryUserStore):
    first, second = store.repository(), store.repository()
    first.upsert_many([("shared", 1), ("mine", 1)])
    second.upsert_many([("shared", 2)])
    second.commit()
    first.commit()

    rows = {row.name: row for row in store.rows()}
    assert (rows["shared"].number, rows["mine"].number) == (1, 1)
    assert rows["shared"].updated_at >= rows["shared"].created_at


def test_threads_racing_for_the_same_names_have_one_winner_each(store: InMemoryUserStore):
    names = [f"name{i:03d}" for i in range(100)]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(4)

    def race(worker: int) -> None:
        start.wait()
        for name in names[worker * 7 :] + names[: worker * 7]:
            repo = store.repository()
            repo.add(User(name=name, number=worker))
            try:
                repo.commit()
                outcome = "won"
            except DuplicateUserError as error:
                outcome = "duplicate" if error.name == name else f"wrong name {error.name}"
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=race, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == {"won": 100, "duplicate": 300}
    assert [row.name for row in store.rows()] == names


def test_threads_writing_distinct_users_while_others_read_lose_nothing(
    store: InMemoryUserStore,
):
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        repo = store.repository()
        for i in range(200):
            repo.add(User(name=f"w{worker}-{i:03d}", number=i))
            repo.commit()

    def read() -> None:
        repo = store.repository()
        for _ in range(25):
            try:
                names = [user.name for user in repo.iter_all(batch_size=50)]
                assert names == sorted(names)
                assert len(set(names)) == len(names)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)
                raise

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(store.rows()) == 800


def test_stamps_are_aware_utc_and_differ_between_statements(store: InMemoryUserStore):
    repo = store.repository()
    repo.add_many([("a", 1)])
    repo.add_many([("b", 1)])
    repo.commit()

    a, b = store.rows()
    assert a.created_at.tzinfo is UTC
    assert b.created_at > a.created_at
    assert a.created_at <= datetime.now(UTC)


def test_a_repository_takes_a_store_or_a_session_and_nothing_else(store: InMemoryUserStore):
    session = store.session()
    one, two = InMemoryUserRepository(session), InMemoryUserRepository(session)
    one.add(User(name="Jenny", number=1))

    assert two.get("Jenny") is one.get("Jenny")  # one unit of work, one identity map
    with pytest.raises(InvalidUserError, match="InMemoryUserStore"):
        InMemoryUserRepository("sqlite://")  # type: ignore[arg-type]


def test_a_user_of_a_real_session_is_refused_by_the_fake(store: InMemoryUserStore):
    import userstore

    engine = userstore.create_engine("sqlite://")
    try:
        with userstore.create_session_factory(engine)() as session:
            real = UserRepository(session).add(User(name="Jenny", number=1))
            with pytest.raises(InvalidUserError, match="another session"):
                store.repository().add(real)
    finally:
        engine.dispose()


def test_the_store_reports_every_access_to_its_listeners(store: InMemoryUserStore):
    seen: list[str] = []
    store.listen(seen.append)
    repo = store.repository()
    repo.add(User(name="Jenny", number=1))
    assert seen == []  # staged: nothing touched

    repo.commit()
    store.unlisten(seen.append)
    repo.get("Jenny")

    assert seen == ["INSERT 'Jenny'", "COMMIT"]


def test_clear_empties_the_store(store: InMemoryUserStore):
    repo = store.repository()
    repo.add_many([("a", 1), ("b", 2)])
    repo.commit()

    store.clear()

    assert store.rows() == []
    assert store.repository().list() == []


def test_the_async_repository_streams_with_async_for_and_closes_with_async_with(
    store: InMemoryUserStore,
):
    async def main() -> tuple[list[str], list[str]]:
        repo = store.async_repository()
        assert isinstance(repo, AsyncInMemoryUserRepository)
        await repo.add_many((f"u{i:02d}", i) for i in range(30))
        await repo.commit()
        every = [user.name async for user in repo.iter_all(batch_size=7)]
        first: list[str] = []
        async with repo.iter_all(batch_size=7) as users:
            async for user in users:
                first.append(user.name)
                if len(first) == 3:
                    break
        stream = repo.iter_all()
        await stream.aclose()
        assert [user async for user in stream] == []
        return every, first

    every, first = asyncio.run(main())

    assert every == [f"u{i:02d}" for i in range(30)]
    assert first == ["u00", "u01", "u02"]


def test_a_user_whose_unit_of_work_was_dropped_is_added_as_a_new_row(store: InMemoryUserStore):
    setup = store.repository()
    setup.add(User(name="u", number=1))
    setup.commit()
    loaded = store.repository().get_one("u")
    gc.collect()  # its unit of work is gone, as a session dropped without close()
    other = store.repository()
    other.add(User(name="other", number=2))

    assert other.add(loaded) is loaded
    with pytest.raises(DuplicateUserError) as raised:
        other.commit()

    assert raised.value.name == "u"
    assert [(row.name, row.number) for row in store.rows()] == [("u", 1)]


def test_an_upsert_that_meets_a_row_committed_meanwhile_is_stamped_after_it(
    store: InMemoryUserStore,
):
    late, early = store.repository(), store.repository()
    late.upsert_many([("shared", 1)])
    early.upsert_many([("shared", 2)])
    early.commit()
    committed_by_early = store.rows()[0]
    late.commit()

    row = store.rows()[0]
    assert (row.number, row.created_at) == (1, committed_by_early.created_at)
    assert row.updated_at > committed_by_early.updated_at


def test_async_calls_that_only_stage_do_not_hold_the_unit_of_work(store: InMemoryUserStore):
    async def main() -> list[str]:
        repo = store.async_repository()
        await asyncio.gather(repo.add(User(name="a", number=1)), repo.add(User(name="b", number=2)))

        async def count_later() -> int:
            return await repo.count()

        counted = await asyncio.create_task(count_later())  # another task, not at once: fine
        assert counted == 2
        await repo.commit()
        return [user.name async for user in repo.iter_all()]

    assert asyncio.run(main()) == ["a", "b"]


_NOT_A_REPOSITORY = """
from userstore import UserRepositoryProtocol
from userstore.testing import InMemoryUserStore


class MissingIterAll:
    def __init__(self, store: InMemoryUserStore) -> None:
        self._repo = store.repository()

    def add(self, user: object) -> object:
        return user


broken: UserRepositoryProtocol = MissingIterAll(InMemoryUserStore())
"""


def test_real_and_fake_repositories_satisfy_the_protocols_under_mypy_strict(tmp_path: Path):
    from mypy import api

    conformance = Path(__file__).with_name("protocol_conformance.py")
    broken = tmp_path / "broken_repository.py"
    broken.write_text(_NOT_A_REPOSITORY)

    report, errors, status = api.run(
        ["--strict", "--no-error-summary", str(conformance), str(broken)]
    )

    assert errors == ""
    lines = report.splitlines()
    assert lines, "mypy must reject the broken repository: the check has no teeth otherwise"
    assert all("broken_repository.py" in line for line in lines), report  # none elsewhere
    assert any("UserRepositoryProtocol" in line for line in lines), report
    assert status == 1


def test_the_readme_fake_section_runs_as_an_app_test_file_and_type_checks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    from mypy import api

    (block,) = readme_blocks("python", "Without a database: the in-memory fake")
    path = pytester.path / "test_signup.py"
    path.write_text(block, encoding="utf-8")

    # The block needs no pytest-asyncio (asyncio.run), so none of its settings either.
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:asyncio")
    monkeypatch.chdir(Path(__file__).parents[1])  # where mypy finds userstore's source
    report, errors, status = api.run(["--strict", "--no-error-summary", str(path)])

    result.assert_outcomes(passed=3)
    assert (report, errors, status) == ("", "", 0)
