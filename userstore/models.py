"""The ``User`` model and the metadata that Alembic migrations are checked against."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import Integer, MetaData, String
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from userstore.timestamps import UTCDateTime, utc_now
from userstore.validation import (
    NAME_MAX_LENGTH,
    validate_name,
    validate_number,
    validate_timestamp,
)

# Stable constraint names, so migrations name the same thing on every backend.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Names compare byte for byte, and sort in Unicode code-point order, on every
# backend. Each collation is pinned here rather than left to a server default:
# PostgreSQL "C" over UTF-8 and SQLite BINARY compare UTF-8 bytes, and MariaDB's
# utf8mb4_nopad_bin compares code points without ignoring trailing spaces.
MARIADB_CHARSET: Final = "utf8mb4"
MARIADB_COLLATION: Final = "utf8mb4_nopad_bin"
NAME_TYPE: Final = (
    String(NAME_MAX_LENGTH, collation="BINARY")
    .with_variant(String(NAME_MAX_LENGTH, collation="C"), "postgresql")
    .with_variant(
        mysql.VARCHAR(NAME_MAX_LENGTH, charset=MARIADB_CHARSET, collation=MARIADB_COLLATION),
        "mysql",
        "mariadb",
    )
)

# Table options for MariaDB; its dialect reads ``mariadb_*`` keys and the MySQL
# dialect ``mysql_*`` keys, so both are given.
MARIADB_TABLE_OPTIONS: Final = {
    f"{prefix}_{key}": value
    for prefix in ("mysql", "mariadb")
    for key, value in {
        "engine": "InnoDB",
        "charset": MARIADB_CHARSET,
        "collate": MARIADB_COLLATION,
    }.items()
}


class Base(DeclarativeBase):
    """Declarative base of userstore's models."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """A user: a unique ``name`` and an optional ``number``.

    Values are validated when they are assigned, in the constructor or later,
    so a bad value raises :class:`~userstore.errors.InvalidUserError` at once.
    ``created_at`` and ``updated_at`` are set by the database (UTC, timezone
    aware); ``updated_at`` moves on every update written through the ORM.

    Example:
        >>> User(name="Jenny", number=8675309)
        User(name=Jenny, number=8675309)
    """

    __tablename__ = "users"
    __table_args__: Any = MARIADB_TABLE_OPTIONS
    # The database's timestamps come back with the INSERT or UPDATE that set
    # them (RETURNING where the backend has it, else a SELECT in the same
    # flush), so a user is complete once written: readable after commit and
    # after its session closes, with no lazy load ever (which would fail on a
    # closed session, or in async code).
    # (Typed as DeclarativeBase declares it; a ClassVar would clash with that.)
    __mapper_args__: Any = {"eager_defaults": True}  # noqa: RUF012

    name: Mapped[str] = mapped_column(NAME_TYPE, primary_key=True)
    number: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utc_now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utc_now(), onupdate=utc_now()
    )

    @validates("name")
    def _validate_name(self, _key: str, value: object) -> str:
        return validate_name(value)

    @validates("number")
    def _validate_number(self, _key: str, value: object) -> int | None:
        return validate_number(value)

    @validates("created_at", "updated_at")
    def _validate_timestamp(self, key: str, value: object) -> datetime:
        return validate_timestamp(value, field=key)

    def __repr__(self) -> str:
        return f"User(name={self.name}, number={self.number})"
