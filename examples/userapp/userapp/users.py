"""What the service does with users, written against userstore's repository protocol.

Nothing here knows about HTTP or about a database: each function takes an
:class:`~userstore.AsyncUserRepositoryProtocol`, so the real
:class:`~userstore.AsyncUserRepository` serves it in production and the
in-memory fake (:class:`userstore.testing.AsyncInMemoryUserRepository`) in the
fast tests. None of them commits: the caller's unit of work does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from userstore import AsyncUserRepositoryProtocol, InvalidUserError, User

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500


@dataclass(frozen=True)
class Page:
    """One keyset page of users, in name order.

    Attributes:
        users: At most the page size of users, after the cursor.
        next: The cursor of the next page (the last name on this one), or
            ``None`` when this page is the last.
    """

    users: list[User]
    next: str | None


async def create_user(repo: AsyncUserRepositoryProtocol, name: str, number: int | None) -> User:
    """Stage a new user.

    Raises:
        InvalidUserError: the name or number breaks userstore's rules.
    """
    return await repo.add(User(name=name, number=number))


async def page_of_users(
    repo: AsyncUserRepositoryProtocol, *, after: str | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Page:
    """The users after ``after`` (all, when ``None``), at most ``limit`` of them.

    One more user than the page is read, so the last page says it is the
    last instead of sending the client to an empty one.

    Raises:
        InvalidUserError: ``limit`` is not between 1 and :data:`MAX_PAGE_SIZE`,
            or ``after`` is not a valid name.
    """
    if isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidUserError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit!r}")
    users = await repo.list(after=after, limit=limit + 1)
    if len(users) > limit:
        return Page(users[:limit], users[limit - 1].name)
    return Page(users, None)


async def set_number(repo: AsyncUserRepositoryProtocol, name: str, number: int | None) -> User:
    """Give an existing user a new number.

    Raises:
        UserNotFoundError: no user has that name.
        InvalidUserError: the number breaks userstore's rules.
    """
    user = await repo.get_one(name)
    user.number = number  # validated on assignment; written by the unit of work's commit
    return user
