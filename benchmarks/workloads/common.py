"""Pieces every workload uses."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Final, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.framework import ASYNC, ORM, ORM_DEFAULT_ENGINE, Run, Variant
from benchmarks.stack import AsyncStack, Stack
from userstore import User

USERS: Final = cast(Table, User.__table__)
SQLITE_DEFAULT_ENGINE_NOTE: Final = (
    "SQLite keeps WAL mode in the database file, so ORM (default engine) runs in WAL too; "
    "it differs from userstore's engine by SQLite's own transaction handling (pysqlite's "
    "implicit BEGIN) and no foreign-keys pragma."
)

#: One async run of a workload: a coroutine on the backend's async stack.
AsyncWork = Callable[[AsyncStack], Coroutine[Any, Any, None]]


def default_engine_notes(stack: Stack) -> list[str]:
    """What the default-engine variant differs in on this backend."""
    return [SQLITE_DEFAULT_ENGINE_NOTE] if stack.backend == "sqlite" else []


def orm_variants(stack: Stack, make_run: Callable[[sessionmaker[Session]], Run]) -> list[Variant]:
    """The plain ORM variant on userstore's engine, and the same on a default engine."""
    return [
        Variant(ORM, make_run(stack.orm_sessions)),
        Variant(ORM_DEFAULT_ENGINE, make_run(stack.default_engine_sessions)),
    ]


def on_loop(stack: Stack, work: AsyncWork) -> Run | None:
    """A run that drives ``work`` on the stack's event loop, or None with no async stack."""
    asynchronous = stack.asynchronous
    if asynchronous is None:
        return None

    def run() -> None:
        asynchronous.run(work(asynchronous))

    return run


def async_variant(stack: Stack, name: str, work: AsyncWork) -> Variant:
    """The async variant ``name`` running ``work``, or n/a when the async side cannot run."""
    run = on_loop(stack, work)
    if run is None:
        return Variant.not_available(name, stack.async_unavailable or "no async stack", ASYNC)
    return Variant(name, run, flavour=ASYNC)
