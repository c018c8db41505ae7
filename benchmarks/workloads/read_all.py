"""W4: read every stored user, in name order, without keeping them: time and peak RSS growth.

Each timed run is a fresh subprocess (``python -m benchmarks.measure_read``),
which connects, takes a memory baseline, reads, and reports its own time and
peak RSS growth. The consumer only counts the rows and adds up the numbers.
Every variant reads whole rows (all four columns) in name order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from benchmarks import advanced
from benchmarks.data import iter_user_rows
from benchmarks.framework import (
    ADVANCED_ALCHEMY,
    ADVANCED_ALCHEMY_ASYNC,
    ASYNC,
    ASYNC_SESSION,
    CORE,
    ORM,
    ORM_DEFAULT_ENGINE,
    RAW,
    RAW_ASYNC,
    USERSTORE,
    USERSTORE_ASYNC,
    BenchmarkError,
    Measured,
    Variant,
    Workload,
    as_fast_as_advanced_alchemy,
    at_most,
    rss_below,
)
from benchmarks.scales import Scale
from benchmarks.stack import AsyncStack, Stack
from benchmarks.workloads.common import USERS
from userstore import AsyncUserRepository, User, UserRepository

BATCH_ROWS: Final = 1000
_RAW_SQL: Final = "SELECT name, number, created_at, updated_at FROM users ORDER BY name"
_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]

Tally = tuple[int, int]  # rows read, sum of their numbers


def _tally(numbers: Iterable[int | None]) -> Tally:
    count = total = 0
    for number in numbers:
        count += 1
        total += number or 0
    return count, total


def read_userstore(stack: Stack) -> Tally:
    with stack.userstore_sessions() as session:
        users = UserRepository(session).iter_all(batch_size=BATCH_ROWS)
        return _tally(user.number for user in users)


def read_raw(stack: Stack) -> Tally:
    count = total = 0
    with stack.raw.transaction(), stack.raw.cursor(server_side=True) as cursor:
        cursor.execute(_RAW_SQL)
        while rows := cursor.fetchmany(BATCH_ROWS):
            batch_count, batch_total = _tally(row[1] for row in rows)
            count += batch_count
            total += batch_total
    return count, total


def read_core(stack: Stack) -> Tally:
    statement = select(USERS).order_by(USERS.c.name)
    with stack.engine.connect() as connection:
        result = connection.execution_options(yield_per=BATCH_ROWS).execute(statement)
        return _tally(row.number for row in result)


def _read_orm(stack: Stack, *, default_engine: bool) -> Tally:
    sessions = stack.default_engine_sessions if default_engine else stack.orm_sessions
    statement = select(User).order_by(User.name).execution_options(yield_per=BATCH_ROWS)
    with sessions() as session:
        return _tally(user.number for user in session.scalars(statement))


def read_orm(stack: Stack) -> Tally:
    return _read_orm(stack, default_engine=False)


def read_orm_default_engine(stack: Stack) -> Tally:
    return _read_orm(stack, default_engine=True)


def read_advanced_alchemy(stack: Stack) -> Tally:
    # get_many() is what list() (deprecated since 1.10) calls; both return a list of every row.
    with stack.orm_sessions() as session:
        users = advanced.repository(session).get_many(order_by=(User.name, False))
        return _tally(user.number for user in users)


async def read_userstore_async(a: AsyncStack) -> Tally:
    count = total = 0
    async with a.userstore_sessions() as session:
        async for user in AsyncUserRepository(session).iter_all(batch_size=BATCH_ROWS):
            count += 1
            total += user.number or 0
    return count, total


async def read_raw_async(a: AsyncStack) -> Tally:
    count = total = 0
    async with a.raw.transaction():
        async for rows in a.raw.stream(_RAW_SQL, BATCH_ROWS):
            batch_count, batch_total = _tally(row[1] for row in rows)
            count += batch_count
            total += batch_total
    return count, total


async def read_async_session(a: AsyncStack) -> Tally:
    count = total = 0
    statement = select(User).order_by(User.name).execution_options(yield_per=BATCH_ROWS)
    async with a.sessions() as session:
        async for user in await session.stream_scalars(statement):
            count += 1
            total += user.number or 0
    return count, total


async def read_advanced_alchemy_async(a: AsyncStack) -> Tally:
    async with a.sessions() as session:
        users = await advanced.async_repository(session).get_many(order_by=(User.name, False))
        return _tally(user.number for user in users)


READERS: Final[dict[str, Callable[[Stack], Tally]]] = {
    USERSTORE: read_userstore,
    RAW: read_raw,
    CORE: read_core,
    ORM: read_orm,
    ORM_DEFAULT_ENGINE: read_orm_default_engine,
    ADVANCED_ALCHEMY: read_advanced_alchemy,
}
ASYNC_READERS: Final[dict[str, Callable[[AsyncStack], Coroutine[Any, Any, Tally]]]] = {
    USERSTORE_ASYNC: read_userstore_async,
    RAW_ASYNC: read_raw_async,
    ASYNC_SESSION: read_async_session,
    ADVANCED_ALCHEMY_ASYNC: read_advanced_alchemy_async,
}


def expected_tally(rows: int) -> Tally:
    return rows, rows * (rows - 1) // 2


def build(stack: Stack, scale: Scale) -> Workload:
    rows = scale.read_rows

    def prepare() -> None:
        stack.raw.clear_users()
        stack.raw.fill_users(iter_user_rows(rows))
        stack.raw.analyze()

    def in_subprocess(variant: str) -> Callable[[], Measured]:
        return lambda: _measure_in_subprocess(stack, variant, rows)

    variants = [Variant(name, in_subprocess(name)) for name in READERS if name != ADVANCED_ALCHEMY]
    variants.append(advanced.variant(in_subprocess(ADVANCED_ALCHEMY)))
    for name in ASYNC_READERS:
        if name == ADVANCED_ALCHEMY_ASYNC:
            run = in_subprocess(name) if stack.asynchronous is not None else None
            variants.append(advanced.async_variant(run, stack.async_unavailable))
        elif stack.asynchronous is None:
            reason = stack.async_unavailable or "no async stack"
            variants.append(Variant.not_available(name, reason, ASYNC))
        else:
            variants.append(Variant(name, in_subprocess(name), flavour=ASYNC))
    return Workload(
        key="W4",
        title=f"read all {rows:,} users in name order without keeping them",
        operations=rows,
        unit="rows",
        variants=variants,
        prepare=prepare,
        targets=(
            rss_below("peak RSS growth < 50 MB", USERSTORE, 50),
            at_most("<=1.2x ORM yield_per", USERSTORE, ORM, 1.2),
            as_fast_as_advanced_alchemy(),
            rss_below("peak RSS growth < 50 MB", USERSTORE_ASYNC, 50),
            at_most("<=1.2x AsyncSession stream (yield_per)", USERSTORE_ASYNC, ASYNC_SESSION, 1.2),
            as_fast_as_advanced_alchemy(ASYNC),
        ),
        measures_rss=True,
        notes=[
            "advanced-alchemy has no streaming read: get_many() (which the deprecated list() "
            "calls) returns a list of every row, so its RSS grows with the table; the same "
            "for its async repository."
        ],
    )


def _measure_in_subprocess(stack: Stack, variant: str, rows: int) -> Measured:
    command = [
        sys.executable,
        "-m",
        "benchmarks.measure_read",
        "--backend",
        stack.backend,
        "--url",
        stack.url.render_as_string(hide_password=False),
        "--variant",
        variant,
        "--rows",
        str(rows),
    ]
    completed = subprocess.run(
        command, cwd=_REPOSITORY_ROOT, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines()
        raise BenchmarkError(f"the subprocess failed: {lines[-1] if lines else 'no output'}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return Measured(seconds=float(report["seconds"]), rss_growth=int(report["rss_growth"]))
