"""W2: look up random stored users by name, one ``get`` each, in a cold session.

Each timed run opens a new session (or connection), so no identity map holds
a user yet; the names are distinct, so no get is answered from the session.
Every variant reads the whole row and adds up the numbers, which are checked.
"""

from __future__ import annotations

import random

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks import advanced
from benchmarks.data import iter_user_rows, user_name
from benchmarks.framework import (
    ASYNC,
    ASYNC_SESSION,
    CORE,
    ORM,
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
from benchmarks.workloads.common import (
    USERS,
    async_variant,
    default_engine_notes,
    on_loop,
    orm_variants,
)
from userstore import AsyncUserRepository, User, UserRepository

_SEED = 20_240_601


def build(stack: Stack, scale: Scale) -> Workload:
    stored = scale.get_table_rows
    indexes = random.Random(_SEED).sample(range(stored), min(scale.gets, stored))
    names = [user_name(index) for index in indexes]
    expected_sum = sum(indexes)
    p = stack.raw.placeholder
    raw_sql = f"SELECT name, number, created_at, updated_at FROM users WHERE name = {p}"
    core_statement = select(USERS).where(USERS.c.name == bindparam("name"))

    def prepare() -> None:
        stack.raw.clear_users()
        stack.raw.fill_users(iter_user_rows(stored))
        stack.raw.analyze()

    def expect(total: int) -> None:
        if total != expected_sum:
            raise BenchmarkError(f"the numbers read add up to {total}, not {expected_sum}")

    def run_userstore() -> None:
        total = 0
        with stack.userstore_sessions() as session:
            repo = UserRepository(session)
            for name in names:
                total += _number(repo.get(name))
        expect(total)

    def run_raw() -> None:
        total = 0
        with stack.raw.transaction(), stack.raw.cursor() as cursor:
            for name in names:
                cursor.execute(raw_sql, (name,))
                total += cursor.fetchone()[1]
        expect(total)

    def run_core() -> None:
        total = 0
        with stack.engine.connect() as connection:
            for name in names:
                total += connection.execute(core_statement, {"name": name}).one().number
        expect(total)

    def orm(sessions: sessionmaker[Session]) -> Run:
        def run() -> None:
            total = 0
            with sessions() as session:
                for name in names:
                    total += _number(session.get(User, name))
            expect(total)

        return run

    def run_advanced_alchemy() -> None:
        total = 0
        with stack.orm_sessions() as session:
            repo = advanced.repository(session)
            for name in names:
                total += _number(repo.get(name))
        expect(total)

    async def userstore_async(a: AsyncStack) -> None:
        total = 0
        async with a.userstore_sessions() as session:
            repo = AsyncUserRepository(session)
            for name in names:
                total += _number(await repo.get(name))
        expect(total)

    raw_async_sql = raw_sql.replace(p, "%s")

    async def raw_async(a: AsyncStack) -> None:
        total = 0
        sql = a.raw.with_placeholders(raw_async_sql)
        async with a.raw.transaction():
            for name in names:
                total += (await a.raw.fetch_one(sql, (name,)))[1]
        expect(total)

    async def async_session(a: AsyncStack) -> None:
        total = 0
        async with a.sessions() as session:
            for name in names:
                total += _number(await session.get(User, name))
        expect(total)

    async def advanced_alchemy_async(a: AsyncStack) -> None:
        total = 0
        async with a.sessions() as session:
            repo = advanced.async_repository(session)
            for name in names:
                total += _number(await repo.get(name))
        expect(total)

    return Workload(
        key="W2",
        title=(
            f"{len(names):,} gets of random stored names in a cold session "
            f"({stored:,} users stored)"
        ),
        operations=len(names),
        unit="gets",
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
        prepare=prepare,
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


def _number(user: User | None) -> int:
    if user is None:
        raise BenchmarkError("a stored user was not found")
    return user.number or 0
