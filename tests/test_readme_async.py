"""README.md's Async section stays true: its tour runs, and its FastAPI app serves, everywhere.

Each test runs its README block as written, on the backend under test (the database named by
``USERSTORE_DATABASE_URL``), inside ``asyncio.run``; stored rows are read back with plain SQL.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import URL, make_url

from tests.databases import migrated_database, stored_users, throwaway_database
from tests.test_readme import readme_blocks
from userstore import SchemaOutOfDateError, User

Namespace = dict[str, Any]


def _use_database(monkeypatch: pytest.MonkeyPatch, url: URL) -> None:
    monkeypatch.setenv("USERSTORE_DATABASE_URL", url.render_as_string(hide_password=False))


def _run_block(section: str, monkeypatch: pytest.MonkeyPatch) -> Namespace:
    """Run a README block as the module ``readme``, as an app's own module would run.

    pydantic looks its models' types up in their module, so that module must be importable.
    """
    (block,) = readme_blocks("python", section)
    module = types.ModuleType("readme")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(block, "README.md", "exec"), module.__dict__)
    return module.__dict__


def test_the_async_tour_runs_on_every_backend(
    backend: str, fresh_database_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    if backend == "sqlite":  # the default database, as the sync tour runs on
        monkeypatch.delenv("USERSTORE_DATABASE_URL", raising=False)
        url = make_url(f"sqlite:///{tmp_path / 'userstore.db'}")
    else:
        _use_database(monkeypatch, fresh_database_url)
        url = fresh_database_url

    _run_block("Async", monkeypatch)

    stored = stored_users(url)
    assert len(stored) == 1_001
    assert stored["Jenny"] == 8675309


@pytest.fixture
def database(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[URL]:
    """A migrated database of the backend under test, named by USERSTORE_DATABASE_URL."""
    with migrated_database(backend, tmp_path) as url:
        _use_database(monkeypatch, url)
        yield url


def _serve(
    exercise: Callable[[httpx.AsyncClient], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
    *,
    on_response_start: Callable[[], None] = lambda: None,
) -> None:
    """Build the README's app, start it, and run ``exercise`` against it over ASGI.

    httpx hands a response over only once the app has returned, so ``on_response_start``
    runs when the app starts sending one, as a server would send it to the client.
    """

    async def main() -> None:
        readme = _run_block("In a FastAPI app", monkeypatch)
        app = readme["app"]

        async def served(scope: Any, receive: Any, send: Any) -> None:
            async def sending(message: Any) -> None:
                if message["type"] == "http.response.start":
                    on_response_start()
                await send(message)

            await app(scope, receive, sending)

        transport = httpx.ASGITransport(app=served)
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://userstore.test") as client,
            ):
                await exercise(client)
        finally:
            await readme["engine"].dispose()  # also when the app failed to start

    asyncio.run(main())


def test_the_fastapi_example_adds_a_user_and_returns_it_with_its_stored_timestamp(
    database: URL, monkeypatch: pytest.MonkeyPatch
):
    async def exercise(client: httpx.AsyncClient) -> None:
        added = await client.post("/users", json={"name": "Jenny", "number": 8675309})
        fetched = await client.get("/users/Jenny")

        assert added.status_code == 201
        assert fetched.status_code == 200
        assert added.json() == fetched.json()
        assert (added.json()["name"], added.json()["number"]) == ("Jenny", 8675309)
        assert datetime.fromisoformat(added.json()["created_at"]).utcoffset() is not None

    _serve(exercise, monkeypatch)

    assert stored_users(database) == {"Jenny": 8675309}


def test_the_fastapi_example_answers_409_for_a_taken_name_and_serves_on(
    database: URL, monkeypatch: pytest.MonkeyPatch
):
    async def exercise(client: httpx.AsyncClient) -> None:
        await client.post("/users", json={"name": "Jenny", "number": 8675309})

        taken = await client.post("/users", json={"name": "Jenny", "number": 1})

        assert taken.status_code == 409
        assert "'Jenny'" in taken.json()["detail"]
        assert (await client.get("/users/Jenny")).json()["number"] == 8675309

    _serve(exercise, monkeypatch)

    assert stored_users(database) == {"Jenny": 8675309}


def test_the_fastapi_example_answers_404_for_a_missing_user_and_422_for_a_bad_one(
    database: URL, monkeypatch: pytest.MonkeyPatch
):
    async def exercise(client: httpx.AsyncClient) -> None:
        missing = await client.get("/users/Nobody")
        too_long = await client.post("/users", json={"name": "x" * 300})
        not_there = await client.delete("/users/Nobody")

        assert (missing.status_code, missing.json()) == (404, {"detail": "no user named 'Nobody'"})
        assert too_long.status_code == 422
        assert "at most 255 characters, got 300" in too_long.json()["detail"]
        assert not_there.status_code == 404

    _serve(exercise, monkeypatch)

    assert stored_users(database) == {}


def test_the_fastapi_example_commits_a_delete_before_it_sends_the_response(
    database: URL, monkeypatch: pytest.MonkeyPatch
):
    stored_when_sent: list[dict[str, int | None]] = []

    async def exercise(client: httpx.AsyncClient) -> None:
        await client.post("/users", json={"name": "Jenny", "number": 8675309})

        deleted = await client.delete("/users/Jenny")

        assert deleted.status_code == 204

    _serve(
        exercise,
        monkeypatch,
        on_response_start=lambda: stored_when_sent.append(stored_users(database)),
    )

    assert stored_when_sent == [{"Jenny": 8675309}, {}]


def test_the_fastapi_dependency_rolls_back_when_the_handler_raises(
    database: URL, monkeypatch: pytest.MonkeyPatch
):
    readme = _run_block("In a FastAPI app", monkeypatch)

    async def handle_a_request_that_fails() -> None:
        dependency = readme["repository"]()
        repo = await anext(dependency)
        await repo.add(User(name="Jenny", number=8675309))
        await repo.get("Jenny")  # flushed: the INSERT has been sent
        with pytest.raises(RuntimeError, match="the handler failed"):
            await dependency.athrow(RuntimeError("the handler failed"))
        await readme["engine"].dispose()

    asyncio.run(handle_a_request_that_fails())

    assert stored_users(database) == {}


def test_the_fastapi_example_refuses_to_start_on_a_database_that_is_not_migrated(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    async def exercise(client: httpx.AsyncClient) -> None:
        pytest.fail("the app started")

    with throwaway_database(backend, tmp_path) as url:
        _use_database(monkeypatch, url)
        with pytest.raises(SchemaOutOfDateError):
            _serve(exercise, monkeypatch)
