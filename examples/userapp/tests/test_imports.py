"""Bulk import: parsing CSV and JSON bodies, and upserting them on the in-memory fake."""

from __future__ import annotations

import json

import pytest
from userstore import InvalidUserError, UpsertResult
from userstore.testing import InMemoryUserStore

from userapp import imports


def test_csv_rows_are_read_with_empty_numbers_as_none_and_names_exactly():
    body = b'name,number\r\nJenny,8675309\r\n Sam ,\r\n"a,b",-1\r\n'

    assert imports.rows_from_csv(body) == [("Jenny", 8675309), (" Sam ", None), ("a,b", -1)]


def test_a_byte_order_mark_before_the_csv_header_is_not_part_of_it():
    assert imports.rows_from_csv("\ufeffname,number\nJenny,1\n".encode()) == [("Jenny", 1)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "line 1: the header must be name,number, got None"),
        (b"user,phone\nJenny,1\n", "line 1: the header must be name,number"),
        (b"name,number\nJenny\n", "line 2: expected 2 fields (name,number), got 1"),
        (b"name,number\nJenny,1,2\n", "line 2: expected 2 fields (name,number), got 3"),
        (b"name,number\nJenny,1.5\n", "line 2: number must be an integer or empty, got '1.5'"),
        (b"name,number\n\xff,1\n", "the body must be UTF-8"),
    ],
)
def test_malformed_csv_is_invalid_with_a_message_naming_where(body: bytes, message: str):
    with pytest.raises(InvalidUserError) as raised:
        imports.rows_from_csv(body)

    assert str(raised.value).startswith(message)


def test_json_rows_are_read_with_a_missing_number_as_none():
    body = json.dumps([{"name": "Jenny", "number": 1}, {"name": "Sam"}]).encode()

    assert imports.rows_from_json(body) == [
        {"name": "Jenny", "number": 1},
        {"name": "Sam", "number": None},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[", "the body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "the body is not valid JSON: nested too deeply"),
        (b'{"name": "Jenny"}', "the body must be a JSON list, got dict"),
        (b'["Jenny"]', "item 0: expected an object, got 'Jenny'"),
        (b'[{"number": 1}]', "item 0: expected keys name and number, got ['number']"),
        (b'[{"name": "J", "phone": 1}]', "item 0: expected keys name and number"),
    ],
)
def test_malformed_json_is_invalid_with_a_message_naming_where(body: bytes, message: str):
    with pytest.raises(InvalidUserError) as raised:
        imports.rows_from_json(body)

    assert str(raised.value).startswith(message)


def test_only_csv_and_json_are_parsed():
    with pytest.raises(ValueError, match="cannot import 'text/plain'"):
        imports.parse(b"Jenny", "text/plain")


async def test_an_import_counts_inserted_updated_and_unchanged_rows(store: InMemoryUserStore):
    repo = store.async_repository()
    await repo.add_many([("Jenny", 1), ("Sam", 2)])
    await repo.commit()

    result = await imports.import_users(repo, [("Jenny", 10), ("Sam", 2), ("new", None)])
    await repo.commit()

    assert result == UpsertResult(inserted=1, updated=1, unchanged=1)
    stored = {user.name: user.number for user in await store.async_repository().list()}
    assert stored == {"Jenny": 10, "Sam": 2, "new": None}


async def test_an_import_with_a_bad_row_writes_none_of_it(store: InMemoryUserStore):
    repo = store.async_repository()

    with pytest.raises(InvalidUserError, match="1"):
        await imports.import_users(
            repo, [{"name": "Jenny", "number": 1}, {"name": "", "number": 2}]
        )
    await repo.commit()

    assert await store.async_repository().count() == 0
