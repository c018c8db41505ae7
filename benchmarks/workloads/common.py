"""Pieces every workload uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.framework import ORM, ORM_DEFAULT_ENGINE, Run, Variant
from benchmarks.stack import Stack
from userstore import User

USERS: Final = cast(Table, User.__table__)
SQLITE_DEFAULT_ENGINE_NOTE: Final = (
    "SQLite keeps WAL mode in the database file, so ORM (default engine) runs in WAL too; "
    "it differs from userstore's engine by SQLite's own transaction handling (pysqlite's "
    "implicit BEGIN) and no foreign-keys pragma."
)


def default_engine_notes(stack: Stack) -> list[str]:
    """What the default-engine variant differs in on this backend."""
    return [SQLITE_DEFAULT_ENGINE_NOTE] if stack.backend == "sqlite" else []


def orm_variants(stack: Stack, make_run: Callable[[sessionmaker[Session]], Run]) -> list[Variant]:
    """The plain ORM variant on userstore's engine, and the same on a default engine."""
    return [
        Variant(ORM, make_run(stack.orm_sessions)),
        Variant(ORM_DEFAULT_ENGINE, make_run(stack.default_engine_sessions)),
    ]
