"""W5: upsert N rows, half of them new, half existing with a changed number; then commit.

The table starts with every other name of the N (numbers ``i``); the upsert
sends all N names with numbers ``i + 1``, so half insert and half update.
The raw, Core and ORM variants send the native upsert userstore uses, by
executemany: ``INSERT … ON CONFLICT (name) DO UPDATE … WHERE`` the number
differs (SQLite, PostgreSQL), ``INSERT … ON DUPLICATE KEY UPDATE`` (MariaDB);
``updated_at`` moves only for changed rows. (userstore itself sends each batch
as one statement over ``unnest`` arrays on PostgreSQL.)
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import func
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from benchmarks import advanced
from benchmarks.data import user_rows
from benchmarks.framework import (
    ASYNC,
    ASYNC_SESSION,
    CORE,
    RAW,
    RAW_ASYNC,
    USERSTORE,
    USERSTORE_ASYNC,
    BenchmarkError,
    Run,
    Variant,
    Workload,
    as_fast_as_advanced_alchemy,
    at_most,
)
from benchmarks.scales import Scale
from benchmarks.stack import AsyncStack, Stack
from benchmarks.workloads.common import USERS, async_variant, on_loop, orm_variants
from userstore import AsyncUserRepository, User, UserRepository
from userstore.timestamps import utc_now

RAW_UPSERT: Final = {
    "postgresql": (
        "INSERT INTO users (name, number) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET "
        "number = EXCLUDED.number, updated_at = statement_timestamp() "
        "WHERE users.number IS DISTINCT FROM EXCLUDED.number"
    ),
    "sqlite": (
        "INSERT INTO users (name, number) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
        "number = excluded.number, updated_at = strftime('%Y-%m-%d %H:%M:%f000', 'now') "
        "WHERE users.number IS NOT excluded.number"
    ),
    "mariadb": (
        "INSERT INTO users (name, number) VALUES (%s, %s) ON DUPLICATE KEY UPDATE "
        "updated_at = IF(number <=> VALUES(number), updated_at, UTC_TIMESTAMP(6)), "
        "number = VALUES(number)"
    ),
}


def upsert_statement(backend: str, target: Any) -> Any:
    """The native upsert as a SQLAlchemy statement on ``target`` (the table, or ``User``)."""
    if backend == "mariadb":
        on_duplicate = mysql.insert(target)
        unchanged = USERS.c.number.is_not_distinct_from(on_duplicate.inserted.number)
        return on_duplicate.on_duplicate_key_update(
            [
                ("updated_at", func.IF(unchanged, USERS.c.updated_at, utc_now())),
                ("number", on_duplicate.inserted.number),
            ]
        )
    on_conflict = (postgresql if backend == "postgresql" else sqlite).insert(target)
    return on_conflict.on_conflict_do_update(
        index_elements=[USERS.c.name],
        set_={"number": on_conflict.excluded.number, "updated_at": utc_now()},
        where=USERS.c.number.is_distinct_from(on_conflict.excluded.number),
    )


def build(stack: Stack, scale: Scale) -> Workload:
    stored = user_rows(scale.upsert_rows, step=2)
    rows = user_rows(scale.upsert_rows, number_offset=1)
    number_sum = sum(number for _, number in rows)
    expected_inserted = len(rows) - len(stored)

    def reset() -> None:
        stack.raw.clear_users()
        stack.raw.fill_users(stored)

    def run_userstore() -> None:
        with stack.userstore_sessions() as session:
            repo = UserRepository(session)
            result = repo.upsert_many(rows)
            repo.commit()
        if (result.inserted, result.updated) != (expected_inserted, len(stored)):
            raise BenchmarkError(f"upsert_many reported {result}")

    def run_raw() -> None:
        with stack.raw.transaction(), stack.raw.cursor() as cursor:
            cursor.executemany(RAW_UPSERT[stack.backend], rows)

    def run_core() -> None:
        statement = upsert_statement(stack.backend, USERS)
        with stack.engine.begin() as connection:
            connection.execute(statement, [{"name": n, "number": x} for n, x in rows])

    def orm(sessions: sessionmaker[Session]) -> Run:
        statement = upsert_statement(stack.backend, User)

        def run() -> None:
            with sessions() as session:
                session.execute(statement, [{"name": n, "number": x} for n, x in rows])
                session.commit()

        return run

    def run_advanced_alchemy() -> None:
        with stack.orm_sessions() as session:
            repo = advanced.repository(session)
            # For this model it takes its SELECT-then-INSERT/UPDATE path: User.updated_at
            # has a SQL onupdate, which its native ON CONFLICT path does not handle.
            repo.upsert_many([User(name=n, number=x) for n, x in rows])
            session.commit()

    async def userstore_async(a: AsyncStack) -> None:
        async with a.userstore_sessions() as session:
            repo = AsyncUserRepository(session)
            result = await repo.upsert_many(rows)
            await repo.commit()
        if (result.inserted, result.updated) != (expected_inserted, len(stored)):
            raise BenchmarkError(f"upsert_many reported {result}")

    async def raw_async(a: AsyncStack) -> None:
        sql = a.raw.with_placeholders(RAW_UPSERT[stack.backend].replace("?", "%s"))
        async with a.raw.transaction():
            await a.raw.executemany(sql, rows)

    async def async_session(a: AsyncStack) -> None:
        statement = upsert_statement(stack.backend, User)
        async with a.sessions() as session:
            await session.execute(statement, [{"name": n, "number": x} for n, x in rows])
            await session.commit()

    async def advanced_alchemy_async(a: AsyncStack) -> None:
        async with a.sessions() as session:
            repo = advanced.async_repository(session)
            await repo.upsert_many([User(name=n, number=x) for n, x in rows])
            await session.commit()

    return Workload(
        key="W5",
        title=(
            f"upsert of {len(rows):,} rows, {len(stored):,} of them stored "
            "with another number, then commit"
        ),
        operations=len(rows),
        unit="rows",
        variants=[
            Variant(USERSTORE, run_userstore),
            Variant(RAW, run_raw),
            Variant(CORE, run_core),
            *orm_variants(stack, orm),
            advanced.variant(run_advanced_alchemy),
            async_variant(stack, USERSTORE_ASYNC, userstore_async),
            async_variant(stack, RAW_ASYNC, raw_async),
            async_variant(stack, ASYNC_SESSION, async_session),
            advanced.async_variant(on_loop(stack, advanced_alchemy_async), stack.async_unavailable),
        ],
        reset=reset,
        check=lambda: stack.raw.expect_users(len(rows), number_sum),
        notes=[
            "advanced-alchemy's upsert_many() takes its fallback path for this model "
            "(User.updated_at has a SQL onupdate): SELECT ... IN, INSERT executemany, "
            "UPDATE executemany by name, re-SELECT of the updated rows; it sets updated_at "
            "on every existing row, changed or not."
        ],
        targets=(
            at_most("<=1.5x raw upsert executemany", USERSTORE, RAW, 1.5),
            as_fast_as_advanced_alchemy(),
            at_most("<=1.5x raw async upsert executemany", USERSTORE_ASYNC, RAW_ASYNC, 1.5),
            as_fast_as_advanced_alchemy(ASYNC),
        ),
    )
