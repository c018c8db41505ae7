"""W1: insert N new users into an empty table in one unit of work, then commit.

Every variant starts from the same ``(name, number)`` tuples and builds what
its API takes (dicts, ``User`` objects) inside the timed region.
"""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from benchmarks import advanced
from benchmarks.data import user_rows
from benchmarks.framework import (
    ADVANCED_ALCHEMY,
    ADVANCED_ALCHEMY_ASYNC,
    ASYNC,
    ASYNC_SESSION,
    CORE,
    RAW,
    RAW_ASYNC,
    RAW_ASYNC_COPY,
    RAW_COPY,
    USERSTORE,
    USERSTORE_ASYNC,
    Run,
    Target,
    Variant,
    Workload,
    as_fast_as_advanced_alchemy,
    at_most,
    speedup,
)
from benchmarks.scales import Scale
from benchmarks.stack import AsyncStack, Stack
from benchmarks.workloads.common import USERS, async_variant, on_loop, orm_variants
from userstore import AsyncUserRepository, User, UserRepository

_COPY = "COPY users (name, number) FROM STDIN"


def build(stack: Stack, scale: Scale) -> Workload:
    rows = user_rows(scale.insert_rows)
    number_sum = sum(number for _, number in rows)

    def run_userstore() -> None:
        with stack.userstore_sessions() as session:
            repo = UserRepository(session)
            repo.add_many(rows)
            repo.commit()

    def run_raw() -> None:
        with stack.raw.transaction(), stack.raw.cursor() as cursor:
            cursor.executemany(stack.raw.insert_sql, rows)

    def run_copy() -> None:
        with stack.raw.transaction(), stack.raw.cursor() as cursor, cursor.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)

    def run_core() -> None:
        with stack.engine.begin() as connection:
            connection.execute(insert(USERS), [{"name": n, "number": x} for n, x in rows])

    def orm(sessions: sessionmaker[Session]) -> Run:
        def run() -> None:
            with sessions() as session:
                session.add_all([User(name=n, number=x) for n, x in rows])
                session.commit()

        return run

    def run_advanced_alchemy() -> None:
        with stack.orm_sessions() as session:
            repo = advanced.repository(session)
            repo.add_many([User(name=n, number=x) for n, x in rows], auto_commit=True)

    async def userstore_async(a: AsyncStack) -> None:
        async with a.userstore_sessions() as session:
            repo = AsyncUserRepository(session)
            await repo.add_many(rows)
            await repo.commit()

    async def raw_async(a: AsyncStack) -> None:
        async with a.raw.transaction():
            await a.raw.executemany(a.raw.insert_sql, rows)

    async def raw_async_copy(a: AsyncStack) -> None:
        async with a.raw.transaction():
            await a.raw.copy_records(rows)

    async def async_session(a: AsyncStack) -> None:
        async with a.sessions() as session:
            session.add_all([User(name=n, number=x) for n, x in rows])
            await session.commit()

    async def advanced_alchemy_async(a: AsyncStack) -> None:
        async with a.sessions() as session:
            repo = advanced.async_repository(session)
            await repo.add_many([User(name=n, number=x) for n, x in rows], auto_commit=True)

    postgresql = stack.backend == "postgresql"
    variants = [Variant(USERSTORE, run_userstore), Variant(RAW, run_raw)]
    if postgresql:
        variants.append(Variant(RAW_COPY, run_copy))
    variants += [
        Variant(CORE, run_core),
        *orm_variants(stack, orm),
        advanced.variant(run_advanced_alchemy),
        async_variant(stack, USERSTORE_ASYNC, userstore_async),
        async_variant(stack, RAW_ASYNC, raw_async),
    ]
    if postgresql:
        variants.append(async_variant(stack, RAW_ASYNC_COPY, raw_async_copy))
    variants += [
        async_variant(stack, ASYNC_SESSION, async_session),
        advanced.async_variant(on_loop(stack, advanced_alchemy_async), stack.async_unavailable),
    ]
    targets: list[Target] = [
        at_most("<=1.5x raw COPY", USERSTORE, RAW_COPY, 1.5)
        if postgresql
        else at_most("<=1.5x raw executemany", USERSTORE, RAW, 1.5),
        as_fast_as_advanced_alchemy(),
    ]
    if stack.backend == "sqlite":
        targets.append(
            speedup(">=10x faster than advanced-alchemy", USERSTORE, ADVANCED_ALCHEMY, 10)
        )
    targets += [
        at_most("<=1.5x raw async COPY", USERSTORE_ASYNC, RAW_ASYNC_COPY, 1.5)
        if postgresql
        else at_most("<=1.5x raw async executemany", USERSTORE_ASYNC, RAW_ASYNC, 1.5),
        as_fast_as_advanced_alchemy(ASYNC),
    ]
    if stack.backend == "sqlite":
        targets.append(
            speedup(
                ">=10x faster than advanced-alchemy async",
                USERSTORE_ASYNC,
                ADVANCED_ALCHEMY_ASYNC,
                10,
            )
        )
    return Workload(
        key="W1",
        title=f"bulk insert of {len(rows):,} users into an empty table, then commit",
        operations=len(rows),
        unit="rows",
        variants=variants,
        reset=stack.raw.clear_users,
        check=lambda: stack.raw.expect_users(len(rows), number_sum),
        baselines=(RAW, RAW_COPY) if postgresql else (RAW,),
        targets=tuple(targets),
    )
