"""The app's own table: notes about a user, through the API, on the test database."""

from __future__ import annotations

import httpx
from userstore import AsyncUserRepository, User


async def _add_user(client: httpx.AsyncClient, name: str) -> None:
    assert (await client.post("/users", json={"name": name})).status_code == 201


async def test_notes_are_stored_and_listed_oldest_first(client, stored):
    await _add_user(client, "Jenny")

    first = await client.post("/users/Jenny/notes", json={"body": "called back"})
    second = await client.post("/users/Jenny/notes", json={"body": "prefers email"})
    listed = await client.get("/users/Jenny/notes")

    assert (first.status_code, second.status_code, listed.status_code) == (201, 201, 200)
    assert listed.json() == [first.json(), second.json()]
    assert [note["body"] for note in listed.json()] == ["called back", "prefers email"]
    assert await stored("SELECT user_name, body FROM notes ORDER BY id") == [
        ("Jenny", "called back"),
        ("Jenny", "prefers email"),
    ]


async def test_a_user_without_notes_lists_none(client):
    await _add_user(client, "Jenny")

    response = await client.get("/users/Jenny/notes")

    assert response.status_code == 200
    assert response.json() == []


async def test_a_note_about_a_missing_user_is_404_and_stores_nothing(client, stored):
    response = await client.post("/users/nobody/notes", json={"body": "hello"})

    assert response.status_code == 404
    assert response.json()["name"] == "nobody"
    assert await stored("SELECT COUNT(*) FROM notes") == [(0,)]


async def test_a_user_deleted_between_the_check_and_the_insert_is_404_not_500(
    client, stored, monkeypatch
):
    async def found_a_moment_ago(self: AsyncUserRepository, name: str) -> User:
        return User(name=name, number=None)  # then a delete committed: the row is gone

    monkeypatch.setattr(AsyncUserRepository, "get_one", found_a_moment_ago)
    response = await client.post("/users/nobody/notes", json={"body": "hello"})

    assert response.status_code == 404
    assert response.json()["name"] == "nobody"
    assert await stored("SELECT COUNT(*) FROM notes") == [(0,)]


async def test_listing_the_notes_of_a_missing_user_is_404(client):
    response = await client.get("/users/nobody/notes")

    assert response.status_code == 404
    assert response.json()["error"] == "UserNotFoundError"


async def test_deleting_a_user_deletes_its_notes_and_only_its_own(client, stored):
    await _add_user(client, "Jenny")
    await _add_user(client, "Sam")
    await client.post("/users/Jenny/notes", json={"body": "one"})
    await client.post("/users/Sam/notes", json={"body": "two"})

    response = await client.delete("/users/Jenny")

    assert response.status_code == 204
    assert await stored("SELECT user_name, body FROM notes") == [("Sam", "two")]


async def test_a_user_created_again_under_a_deleted_name_has_no_notes(client):
    await _add_user(client, "Jenny")
    await client.post("/users/Jenny/notes", json={"body": "old"})
    await client.delete("/users/Jenny")
    await _add_user(client, "Jenny")

    response = await client.get("/users/Jenny/notes")

    assert response.json() == []


async def test_an_empty_note_is_refused_by_the_request_schema(client):
    await _add_user(client, "Jenny")

    response = await client.post("/users/Jenny/notes", json={"body": ""})

    assert response.status_code == 422
