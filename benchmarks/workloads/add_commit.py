"""W3: many small units of work in one session: add one new user, commit; repeat."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from benchmarks import advanced
from benchmarks.data import user_rows
from benchmarks.framework import (
    ASYNC,
    ASYNC_SESSION,
    CORE,
    ORM,
    RAW,
    RAW_ASYNC,
    USERSTORE,
    USERSTORE_ASYNC,
    Run,
    Variant,
    Workload,
    as_fast_as_advanced_alchemy,
    at_most,
)
from benchmarks.scales import Scale
from benchmarks.stack import AsyncStack, Stack
from benchmarks.workloads.common import (
    USERS,
    async_variant,
    default_engine_notes,
    on_loop,
    orm_variants,
)
from userstore import AsyncUserRepository, User, UserRepository


def build(stack: Stack, scale: Scale) -> Workload:
    rows = user_rows(scale.units)
    number_sum = sum(number for _, number in rows)

    def run_userstore() -> None:
        with stack.userstore_sessions() as session:
            repo = UserRepository(session)
            for name, number in rows:
                repo.add(User(name=name, number=number))
                repo.commit()

    def run_raw() -> None:
        raw = stack.raw
        with raw.cursor() as cursor:
            for row in rows:
                raw.begin()
                cursor.execute(raw.insert_sql, row)
                raw.commit()

    def run_core() -> None:
        statement = insert(USERS)
        with stack.engine.connect() as connection:
            for name, number in rows:
                connection.execute(statement, {"name": name, "number": number})
                connection.commit()

    def orm(sessions: sessionmaker[Session]) -> Run:
        def run() -> None:
            with sessions() as session:
                for name, number in rows:
                    session.add(User(name=name, number=number))
                    session.commit()

        return run

    def run_advanced_alchemy() -> None:
        with stack.orm_sessions() as session:
            repo = advanced.repository(session)
            for name, number in rows:
                repo.add(User(name=name, number=number), auto_commit=True)

    async def userstore_async(a: AsyncStack) -> None:
        async with a.userstore_sessions() as session:
            repo = AsyncUserRepository(session)
            for name, number in rows:
                await repo.add(User(name=name, number=number))
                await repo.commit()

    async def raw_async(a: AsyncStack) -> None:
        raw = a.raw
        sql = raw.insert_sql
        for row in rows:
            await raw.begin()
            await raw.execute(sql, row)
            await raw.commit()

    async def async_session(a: AsyncStack) -> None:
        async with a.sessions() as session:
            for name, number in rows:
                session.add(User(name=name, number=number))
                await session.commit()

    async def advanced_alchemy_async(a: AsyncStack) -> None:
        async with a.sessions() as session:
            repo = advanced.async_repository(session)
            for name, number in rows:
                await repo.add(User(name=name, number=number), auto_commit=True)

    return Workload(
        key="W3",
        title=f"{len(rows):,} units of work of one add and a commit, in one session",
        operations=len(rows),
        unit="units",
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
        reset=stack.raw.clear_users,
        check=lambda: stack.raw.expect_users(len(rows), number_sum),
        notes=default_engine_notes(stack),
        targets=(
            at_most("<=1.10x ORM on the same engine", USERSTORE, ORM, 1.10),
            as_fast_as_advanced_alchemy(),
            at_most(
                "<=1.10x AsyncSession on the same engine", USERSTORE_ASYNC, ASYNC_SESSION, 1.10
            ),
            as_fast_as_advanced_alchemy(ASYNC),
        ),
    )
