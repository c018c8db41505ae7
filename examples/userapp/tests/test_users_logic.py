"""The service's logic on the in-memory fake: no database, no HTTP, milliseconds a test.

The functions take any ``AsyncUserRepositoryProtocol``; here it is
``userstore.testing``'s fake, which keeps userstore's rules, errors and units
of work (state is published by ``commit``, as a database's would be).
"""

from __future__ import annotations

import pytest
from userstore import DuplicateUserError, InvalidUserError, UserNotFoundError
from userstore.testing import AsyncInMemoryUserRepository, InMemoryUserStore

from userapp import users


async def _stored(store: InMemoryUserStore, *rows: tuple[str, int | None]) -> None:
    repo = store.async_repository()
    await repo.add_many(rows)
    await repo.commit()


async def test_a_created_user_is_stored_once_committed(store: InMemoryUserStore):
    repo = store.async_repository()

    user = await users.create_user(repo, "Jenny", 8675309)
    await repo.commit()

    assert (user.name, user.number) == ("Jenny", 8675309)
    assert await store.async_repository().get("Jenny") is not None


async def test_creating_a_taken_name_raises_duplicate_at_commit(store: InMemoryUserStore):
    await _stored(store, ("Jenny", 1))
    repo = store.async_repository()

    await users.create_user(repo, "Jenny", 2)
    with pytest.raises(DuplicateUserError) as raised:
        await repo.commit()

    assert raised.value.name == "Jenny"


async def test_a_page_holds_at_most_limit_users_and_points_at_the_next(store: InMemoryUserStore):
    await _stored(store, *((f"user{i}", i) for i in range(5)))
    repo = AsyncInMemoryUserRepository(store)

    first = await users.page_of_users(repo, limit=2)
    second = await users.page_of_users(repo, after=first.next, limit=2)
    last = await users.page_of_users(repo, after=second.next, limit=2)

    assert [[user.name for user in page.users] for page in (first, second, last)] == [
        ["user0", "user1"],
        ["user2", "user3"],
        ["user4"],
    ]
    assert (first.next, second.next, last.next) == ("user1", "user3", None)


async def test_an_empty_store_is_one_empty_last_page(store: InMemoryUserStore):
    page = await users.page_of_users(store.async_repository())

    assert page == users.Page([], None)


@pytest.mark.parametrize("limit", [0, -1, users.MAX_PAGE_SIZE + 1, True])
async def test_a_limit_out_of_range_is_refused_before_any_read(
    store: InMemoryUserStore, limit: int
):
    reads: list[str] = []
    store.listen(reads.append)

    with pytest.raises(InvalidUserError, match="limit must be between 1 and"):
        await users.page_of_users(store.async_repository(), limit=limit)
    assert reads == []


async def test_setting_a_number_changes_it_at_commit(store: InMemoryUserStore):
    await _stored(store, ("Jenny", 1))
    repo = store.async_repository()

    user = await users.set_number(repo, "Jenny", 2)
    await repo.commit()

    assert user.number == 2
    assert (await store.async_repository().get_one("Jenny")).number == 2


async def test_a_number_set_but_rolled_back_is_not_stored(store: InMemoryUserStore):
    await _stored(store, ("Jenny", 1))
    repo = store.async_repository()

    await users.set_number(repo, "Jenny", 2)
    await repo.rollback()

    assert (await store.async_repository().get_one("Jenny")).number == 1


async def test_setting_the_number_of_a_missing_user_raises_not_found(store: InMemoryUserStore):
    with pytest.raises(UserNotFoundError) as raised:
        await users.set_number(store.async_repository(), "nobody", 1)

    assert raised.value.name == "nobody"


async def test_setting_a_number_userstore_refuses_raises_invalid(store: InMemoryUserStore):
    await _stored(store, ("Jenny", 1))

    with pytest.raises(InvalidUserError, match="number"):
        await users.set_number(store.async_repository(), "Jenny", 2**31)
