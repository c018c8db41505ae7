"""The user endpoints, served on the test database (every backend the plugin is given).

What a request wrote is checked with plain SQL in the test's transaction.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

import httpx

from userapp.users import MAX_PAGE_SIZE


async def _add(client: httpx.AsyncClient, *users: tuple[str, int | None]) -> None:
    for name, number in users:
        response = await client.post("/users", json={"name": name, "number": number})
        assert response.status_code == 201, response.text


async def test_creating_a_user_stores_it_and_returns_it_with_its_location(client, stored):
    response = await client.post("/users", json={"name": "Jenny", "number": 8675309})

    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["number"]) == ("Jenny", 8675309)
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
    assert response.headers["location"] == "/users/Jenny"
    assert await stored("SELECT name, number FROM users") == [("Jenny", 8675309)]


async def test_the_location_of_a_user_with_any_characters_in_its_name_is_percent_encoded(
    client, stored
):
    for name in ["Jénny Doe", "a/b", "100%"]:
        response = await client.post("/users", json={"name": name})

        assert response.status_code == 201
        assert response.headers["location"] == "/users/" + quote(name, safe="")
    fetched = await client.get("/users/J%C3%A9nny%20Doe")
    assert fetched.json()["name"] == "Jénny Doe"
    assert await stored("SELECT COUNT(*) FROM users") == [(3,)]


async def test_creating_a_taken_name_is_409_naming_it_and_writes_nothing(client, stored):
    await _add(client, ("Jenny", 8675309))

    response = await client.post("/users", json={"name": "Jenny", "number": 1})

    assert response.status_code == 409
    assert response.json()["error"] == "DuplicateUserError"
    assert response.json()["name"] == "Jenny"
    assert await stored("SELECT name, number FROM users") == [("Jenny", 8675309)]


async def test_creating_a_user_with_a_name_userstore_refuses_is_422_with_its_message(
    client, stored
):
    response = await client.post("/users", json={"name": "x" * 256, "number": 1})

    assert response.status_code == 422
    assert response.json() == {
        "error": "InvalidUserError",
        "detail": "name must be at most 255 characters, got 256",
    }
    assert await stored("SELECT COUNT(*) FROM users") == [(0,)]


async def test_getting_a_user_returns_what_was_stored(client):
    await _add(client, ("Jenny", 8675309))

    response = await client.get("/users/Jenny")

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["number"]) == ("Jenny", 8675309)


async def test_getting_a_missing_user_is_404_naming_it(client):
    response = await client.get("/users/nobody")

    assert response.status_code == 404
    assert response.json() == {
        "error": "UserNotFoundError",
        "detail": "no user named 'nobody'",
        "name": "nobody",
    }


async def test_names_are_exact_in_paths_too(client):
    await _add(client, ("Jenny", 1))

    assert (await client.get("/users/jenny")).status_code == 404
    assert (await client.get("/users/J%C3%A9nny")).status_code == 404


async def test_listing_walks_every_user_in_code_point_order_a_page_at_a_time(client):
    names = ["b", "a", "B", "é", "A", "c", "Z"]
    await _add(client, *((name, None) for name in names))

    seen: list[str] = []
    pages = 0
    after: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3} | ({"after": after} if after else {})
        page = (await client.get("/users", params=params)).json()
        pages += 1
        seen += [user["name"] for user in page["users"]]
        after = page["next"]
        if after is None:
            break

    assert seen == sorted(names)
    assert pages == 3  # 3 + 3 + 1: the last page says it is the last


async def test_a_page_that_ends_the_list_exactly_has_no_next_cursor(client):
    await _add(client, ("a", 1), ("b", 2))

    page = (await client.get("/users", params={"limit": 2})).json()

    assert [user["name"] for user in page["users"]] == ["a", "b"]
    assert page["next"] is None


async def test_an_empty_cursor_asks_for_the_first_page(client):
    await _add(client, ("a", 1), ("b", 2))

    page = (await client.get("/users?after=&limit=1")).json()

    assert ([user["name"] for user in page["users"]], page["next"]) == (["a"], "a")


async def test_a_number_that_is_not_an_integer_is_refused_before_userstore_sees_it(client, stored):
    for number in (1.0, True, "1"):
        response = await client.post("/users", json={"name": "Jenny", "number": number})

        assert response.status_code == 422
    assert await stored("SELECT COUNT(*) FROM users") == [(0,)]


async def test_listing_with_a_limit_out_of_range_is_422(client):
    for limit in (0, MAX_PAGE_SIZE + 1):
        response = await client.get("/users", params={"limit": limit})

        assert response.status_code == 422
        assert response.json()["error"] == "InvalidUserError"


async def test_changing_a_number_stores_it(client, stored):
    await _add(client, ("Jenny", 8675309))

    response = await client.patch("/users/Jenny", json={"number": 5551234})

    assert response.status_code == 200
    assert response.json()["number"] == 5551234
    assert await stored("SELECT name, number FROM users") == [("Jenny", 5551234)]


async def test_clearing_a_number_stores_null(client, stored):
    await _add(client, ("Jenny", 8675309))

    response = await client.patch("/users/Jenny", json={"number": None})

    assert response.status_code == 200
    assert await stored("SELECT number FROM users") == [(None,)]


async def test_changing_the_number_of_a_missing_user_is_404(client, stored):
    response = await client.patch("/users/nobody", json={"number": 1})

    assert response.status_code == 404
    assert response.json()["name"] == "nobody"
    assert await stored("SELECT COUNT(*) FROM users") == [(0,)]


async def test_a_number_out_of_range_is_422_and_keeps_the_stored_one(client, stored):
    await _add(client, ("Jenny", 8675309))

    response = await client.patch("/users/Jenny", json={"number": 2**31})

    assert response.status_code == 422
    assert response.json()["error"] == "InvalidUserError"
    assert await stored("SELECT number FROM users") == [(8675309,)]


async def test_deleting_a_user_removes_it(client, stored):
    await _add(client, ("Jenny", 1), ("Sam", 2))

    response = await client.delete("/users/Jenny")

    assert response.status_code == 204
    assert await stored("SELECT name FROM users") == [("Sam",)]


async def test_deleting_a_missing_user_is_404(client):
    response = await client.delete("/users/nobody")

    assert response.status_code == 404
    assert response.json()["name"] == "nobody"


async def test_importing_csv_inserts_updates_and_counts_unchanged_rows(client, stored):
    await _add(client, ("Jenny", 8675309), ("Sam", 1))
    csv = "name,number\nJenny,5551234\nSam,1\nnew,\n"

    response = await client.post(
        "/users/import", content=csv, headers={"content-type": "text/csv; charset=utf-8"}
    )

    assert response.status_code == 200
    assert response.json() == {"inserted": 1, "updated": 1, "unchanged": 1}
    assert await stored("SELECT name, number FROM users ORDER BY name") == [
        ("Jenny", 5551234),
        ("Sam", 1),
        ("new", None),
    ]


async def test_importing_a_json_list_upserts_it(client, stored):
    await _add(client, ("Jenny", 8675309))

    response = await client.post(
        "/users/import", json=[{"name": "Jenny", "number": 2}, {"name": "new"}]
    )

    assert response.status_code == 200
    assert response.json() == {"inserted": 1, "updated": 1, "unchanged": 0}
    assert await stored("SELECT name, number FROM users ORDER BY name") == [
        ("Jenny", 2),
        ("new", None),
    ]


async def test_an_import_with_one_bad_row_is_422_and_writes_none_of_it(client, stored):
    await _add(client, ("Jenny", 8675309))

    response = await client.post(
        "/users/import",
        json=[{"name": "Jenny", "number": 1}, {"name": "x" * 300, "number": 2}],
    )

    assert response.status_code == 422
    assert response.json()["error"] == "InvalidUserError"
    assert await stored("SELECT name, number FROM users") == [("Jenny", 8675309)]


async def test_an_import_of_malformed_csv_is_422_naming_the_line(client, stored):
    response = await client.post(
        "/users/import",
        content="name,number\nJenny,1\nSam,one\n",
        headers={"content-type": "text/csv"},
    )

    assert response.status_code == 422
    assert response.json()["detail"] == "line 3: number must be an integer or empty, got 'one'"
    assert await stored("SELECT COUNT(*) FROM users") == [(0,)]


async def test_an_import_of_another_media_type_is_415(client):
    response = await client.post(
        "/users/import", content="<users/>", headers={"content-type": "application/xml"}
    )

    assert response.status_code == 415
