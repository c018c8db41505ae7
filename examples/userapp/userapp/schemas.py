"""What the API reads and writes, as pydantic models.

They check only the shape of a request (a string here, an integer there),
strictly, as userstore does (``1.0``, ``true`` or ``"1"`` is not a number);
userstore's own rules (a name's length and characters, a number's range) are
checked by userstore and come back as ``422`` with its message.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from userapp.notes import BODY_MAX_LENGTH


class NewUser(BaseModel):
    """``POST /users``."""

    name: StrictStr
    number: StrictInt | None = None


class NumberChange(BaseModel):
    """``PATCH /users/{name}``."""

    number: StrictInt | None


class UserOut(BaseModel):
    """A stored user."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    number: int | None
    created_at: datetime
    updated_at: datetime


class PageOut(BaseModel):
    """``GET /users``: one keyset page, and the cursor of the next (``None`` after the last)."""

    model_config = ConfigDict(from_attributes=True)

    users: list[UserOut]
    next: str | None


class ImportOut(BaseModel):
    """``POST /users/import``: how many rows were new, changed or already so."""

    model_config = ConfigDict(from_attributes=True)

    inserted: int
    updated: int
    unchanged: int


class NewNote(BaseModel):
    """``POST /users/{name}/notes``."""

    body: str = Field(min_length=1, max_length=BODY_MAX_LENGTH)


class NoteOut(BaseModel):
    """A stored note."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    body: str


class ErrorOut(BaseModel):
    """Every userstore error's response body."""

    error: str
    detail: str
    name: str | None = None
