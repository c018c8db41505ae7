"""The app's own table, ``notes``: short texts about a user, deleted with the user.

``notes.user_name`` references ``users.name`` with ``ON DELETE CASCADE``: the
database deletes a user's notes in the statement that deletes the user, so no
code path (the API, a script, userstore's own ``delete``) can leave orphans.
The column has userstore's name type (:data:`userstore.app_alembic.USER_NAME_TYPE`),
so the reference compares names exactly as ``users`` does on every backend.

The table is created by the app's own Alembic history (``migrations/``), after
userstore's migrations; userstore's tables are not in this ``MetaData``.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import ForeignKey, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from userstore import AsyncUserRepository, DatabaseError, User, UserNotFoundError
from userstore.app_alembic import USER_NAME_TYPE

BODY_MAX_LENGTH: Final = 1000

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The app's models: everything its own migrations create."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Note(Base):
    """A note about a user."""

    __tablename__ = "notes"
    __table_args__ = ({"mariadb_engine": "InnoDB", "mariadb_charset": "utf8mb4"},)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_name: Mapped[str] = mapped_column(
        USER_NAME_TYPE, ForeignKey(User.name, ondelete="CASCADE"), index=True
    )
    body: Mapped[str] = mapped_column(String(BODY_MAX_LENGTH))


# A foreign-key violation (the referenced user is gone), as each backend codes it.
_NO_SUCH_USER: Final = frozenset({"23503", 1452, "SQLITE_CONSTRAINT_FOREIGNKEY"})


async def add_note(repo: AsyncUserRepository, name: str, body: str) -> Note:
    """Stage a note about the user called ``name``, in the repository's unit of work.

    Raises:
        UserNotFoundError: no user has that name.
    """
    await repo.get_one(name)  # a 404 instead of a foreign-key failure
    note = Note(user_name=name, body=body)
    repo.session.add(note)
    try:
        await repo.session.flush()  # the id, from the database
    except DatabaseError as error:
        # The user was there a moment ago; a delete committed in between.
        if error.code in _NO_SUCH_USER:
            raise UserNotFoundError(name) from error
        raise
    return note


async def notes_of(repo: AsyncUserRepository, name: str) -> list[Note]:
    """The notes about the user called ``name``, oldest first.

    Raises:
        UserNotFoundError: no user has that name.
    """
    await repo.get_one(name)
    statement = select(Note).where(Note.user_name == name).order_by(Note.id)
    return list(await repo.session.scalars(statement))
