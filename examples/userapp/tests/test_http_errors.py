"""Every userstore error's status and body, including the transient ones a database
cannot be made to raise on demand: those come from the in-memory fake, swapped in
for the database through the app's ``get_user_source`` dependency.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from userstore import DatabaseError, DatabaseUnavailableError, TransientDatabaseError, User
from userstore.testing import AsyncInMemoryUserRepository, InMemoryUserStore

from userapp.dependencies import get_user_source


class _FailingCommits(AsyncInMemoryUserRepository):
    """A fake repository whose commits fail with ``error`` while ``failures`` lasts."""

    def __init__(self, store: InMemoryUserStore, failures: list[Exception]) -> None:
        super().__init__(store)
        self._failures = failures

    async def commit(self) -> None:
        if self._failures:
            raise self._failures.pop(0)
        await super().commit()


class _FailingReads(AsyncInMemoryUserRepository):
    """A fake repository whose lookups fail as a lost connection would."""

    async def get_one(self, name: str) -> User:
        raise TransientDatabaseError("server closed the connection unexpectedly")


def _failing(app: FastAPI, store: InMemoryUserStore, *failures: Exception) -> list[Exception]:
    """Serve the user endpoints from repositories whose commits raise ``failures`` in turn."""
    queue = list(failures)
    app.dependency_overrides[get_user_source] = lambda: lambda: _FailingCommits(store, queue)
    return queue


async def test_a_transient_failure_is_retried_and_the_request_succeeds(
    fake_app: FastAPI, fake_client: httpx.AsyncClient, store: InMemoryUserStore
):
    _failing(fake_app, store, TransientDatabaseError("serialization failure", code="40001"))

    response = await fake_client.post("/users", json={"name": "Jenny", "number": 1})

    assert response.status_code == 201
    assert [user.name for user in await store.async_repository().list()] == ["Jenny"]


async def test_a_failure_that_outlasts_the_retries_is_503_with_retry_after(
    fake_app: FastAPI, fake_client: httpx.AsyncClient, store: InMemoryUserStore
):
    error = TransientDatabaseError("deadlock detected", code="40P01", backend="postgresql")
    _failing(fake_app, store, *[error] * 10)

    response = await fake_client.post("/users", json={"name": "Jenny", "number": 1})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": "TransientDatabaseError", "detail": "deadlock detected"}
    assert await store.async_repository().count() == 0


async def test_an_unreachable_database_is_503_too(
    fake_app: FastAPI, fake_client: httpx.AsyncClient, store: InMemoryUserStore
):
    _failing(fake_app, store, *[DatabaseUnavailableError("connection refused")] * 10)

    response = await fake_client.post("/users/import", json=[{"name": "Jenny", "number": 1}])

    assert response.status_code == 503
    assert response.json()["error"] == "DatabaseUnavailableError"


async def test_a_database_error_that_retrying_cannot_fix_is_500_and_not_retried(
    fake_app: FastAPI, fake_client: httpx.AsyncClient, store: InMemoryUserStore
):
    error = DatabaseError("permission denied", code="42501")
    left = _failing(fake_app, store, error, error)

    response = await fake_client.post("/users", json={"name": "Jenny"})

    assert response.status_code == 500
    assert response.json() == {"error": "DatabaseError", "detail": "permission denied"}
    assert left == [error]  # one commit failed; no second attempt was made
    assert await store.async_repository().count() == 0


async def test_a_transient_failure_of_a_read_is_503_at_once(
    fake_app: FastAPI, fake_client: httpx.AsyncClient, store: InMemoryUserStore
):
    fake_app.dependency_overrides[get_user_source] = lambda: lambda: _FailingReads(store)

    response = await fake_client.get("/users/Jenny")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == "server closed the connection unexpectedly"
