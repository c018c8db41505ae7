"""The HTTP endpoints: users, their bulk import, and their notes.

Each write is one unit of work run by :func:`userstore.run_unit_of_work_async`:
the work is a small async function of a repository, committed when it
returns and run again from the start after a transient database failure.
Reads use the request's repository (:data:`userapp.dependencies.Repository`).
Errors are answered by :mod:`userapp.http_errors`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request, Response
from userstore import (
    AsyncUserRepository,
    AsyncUserRepositoryProtocol,
    UpsertResult,
    User,
    run_unit_of_work_async,
)

from userapp import imports, notes, users
from userapp.dependencies import Repository, SessionFactory, Source
from userapp.schemas import ImportOut, NewNote, NewUser, NoteOut, NumberChange, PageOut, UserOut

router = APIRouter()

_IMPORT_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            imports.CSV_TYPE: {
                "schema": {"type": "string"},
                "example": "name,number\nJenny,8675309\n",
            },
            imports.JSON_TYPE: {
                "schema": {"type": "array", "items": NewUser.model_json_schema()},
                "example": [{"name": "Jenny", "number": 8675309}],
            },
        },
    }
}


@router.post("/users", status_code=201, response_model=UserOut)
async def create_user(new: NewUser, source: Source, response: Response) -> User:
    """Add a user; 409 if the name is taken."""

    async def work(repo: AsyncUserRepositoryProtocol) -> User:
        return await users.create_user(repo, new.name, new.number)

    user = await run_unit_of_work_async(source, work)
    # Percent-encoded: a name may hold any character (Starlette's url_path_for refuses a "/").
    response.headers["Location"] = f"/users/{quote(user.name, safe='')}"
    return user


@router.get("/users", response_model=PageOut)
async def list_users(
    repo: Repository,
    after: Annotated[str | None, Query(description="the last name of the previous page")] = None,
    limit: Annotated[int, Query(description=f"at most {users.MAX_PAGE_SIZE}")] = (
        users.DEFAULT_PAGE_SIZE
    ),
) -> users.Page:
    """Users in name order, a keyset page at a time; ``next`` is the next page's ``after``.

    An empty ``after`` (``?after=&limit=10``) is the first page: no name is empty.
    """
    return await users.page_of_users(repo, after=after or None, limit=limit)


@router.post("/users/import", response_model=ImportOut, openapi_extra=_IMPORT_BODY)
async def import_users(request: Request, source: Source) -> UpsertResult:
    """Upsert the users of a CSV (``name,number`` header) or JSON list body, all or nothing."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in imports.MEDIA_TYPES:
        raise HTTPException(
            415, f"send {' or '.join(imports.MEDIA_TYPES)}, not {media_type or 'no content type'}"
        )
    rows = imports.parse(await request.body(), media_type)

    async def work(repo: AsyncUserRepositoryProtocol) -> UpsertResult:
        return await imports.import_users(repo, rows)

    return await run_unit_of_work_async(source, work)


@router.get("/users/{name}", response_model=UserOut)
async def get_user(name: str, repo: Repository) -> User:
    """One user; 404 if there is none of that name."""
    return await repo.get_one(name)


@router.patch("/users/{name}", response_model=UserOut)
async def change_number(name: str, change: NumberChange, source: Source) -> User:
    """Set a user's number (``null`` clears it)."""

    async def work(repo: AsyncUserRepositoryProtocol) -> User:
        return await users.set_number(repo, name, change.number)

    return await run_unit_of_work_async(source, work)


@router.delete("/users/{name}", status_code=204)
async def delete_user(name: str, source: Source) -> None:
    """Delete a user, and with it (``ON DELETE CASCADE``) the user's notes."""

    async def work(repo: AsyncUserRepositoryProtocol) -> None:
        await repo.delete(name)

    await run_unit_of_work_async(source, work)


@router.post("/users/{name}/notes", status_code=201, response_model=NoteOut)
async def add_note(name: str, new: NewNote, session_factory: SessionFactory) -> notes.Note:
    """Add a note about a user; 404 if there is no such user."""

    async def work(repo: AsyncUserRepository) -> notes.Note:
        return await notes.add_note(repo, name, new.body)

    return await run_unit_of_work_async(session_factory, work)


@router.get("/users/{name}/notes", response_model=list[NoteOut])
async def list_notes(name: str, session_factory: SessionFactory) -> list[notes.Note]:
    """A user's notes, oldest first; 404 if there is no such user."""
    async with session_factory() as session:
        return await notes.notes_of(AsyncUserRepository(session), name)
