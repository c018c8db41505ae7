"""The users the workloads write and read: ``user00000042`` has number 42."""

from __future__ import annotations

from collections.abc import Iterator

UserRow = tuple[str, int]


def user_name(index: int) -> str:
    """Return the name of the user with this index; names sort as their indexes do."""
    return f"user{index:08d}"


def user_rows(count: int, *, step: int = 1, number_offset: int = 0) -> list[UserRow]:
    """Return ``(name, number)`` rows for indexes ``0, step, 2*step, ...`` below ``count``.

    Each row's number is its index plus ``number_offset``.
    """
    return [(user_name(index), index + number_offset) for index in range(0, count, step)]


def iter_user_rows(count: int) -> Iterator[UserRow]:
    """Yield the rows of ``user_rows(count)`` without holding them all."""
    return ((user_name(index), index) for index in range(count))


def number_of(name: str) -> int:
    """Return the number a stored user of this name has (its index)."""
    return int(name.removeprefix("user"))
