"""The same user endpoints served from the in-memory fake: the app's dependency is typed
against the repository protocol, so a test can swap the database out (fast HTTP tests)."""

from __future__ import annotations

import httpx
from userstore.testing import InMemoryUserStore


async def test_a_user_created_through_the_api_lands_in_the_fake_store(
    fake_client: httpx.AsyncClient, store: InMemoryUserStore
):
    response = await fake_client.post("/users", json={"name": "Jenny", "number": 8675309})

    assert response.status_code == 201
    assert [(row.name, row.number) for row in store.rows()] == [("Jenny", 8675309)]


async def test_the_fake_answers_every_user_endpoint_as_the_database_does(
    fake_client: httpx.AsyncClient,
):
    await fake_client.post("/users/import", json=[{"name": n, "number": None} for n in "cab"])

    page = (await fake_client.get("/users", params={"limit": 2})).json()
    changed = await fake_client.patch("/users/a", json={"number": 7})
    duplicate = await fake_client.post("/users", json={"name": "b"})
    deleted = await fake_client.delete("/users/c")
    missing = await fake_client.get("/users/c")

    assert ([user["name"] for user in page["users"]], page["next"]) == (["a", "b"], "b")
    assert (changed.status_code, changed.json()["number"]) == (200, 7)
    assert (duplicate.status_code, duplicate.json()["name"]) == (409, "b")
    assert deleted.status_code == 204
    assert (missing.status_code, missing.json()["name"]) == (404, "c")


async def test_the_api_documentation_lists_every_endpoint_and_both_import_media_types(
    fake_client: httpx.AsyncClient,
):
    document = (await fake_client.get("/openapi.json")).json()

    assert {
        (path, method) for path, operations in document["paths"].items() for method in operations
    } == {
        ("/users", "post"),
        ("/users", "get"),
        ("/users/import", "post"),
        ("/users/{name}", "get"),
        ("/users/{name}", "patch"),
        ("/users/{name}", "delete"),
        ("/users/{name}/notes", "post"),
        ("/users/{name}/notes", "get"),
    }
    import_body = document["paths"]["/users/import"]["post"]["requestBody"]["content"]
    assert set(import_body) == {"text/csv", "application/json"}
