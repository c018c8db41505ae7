"""W3: many small units of work in one session: add one new user, commit; repeat."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from benchmarks import advanced
from benchmarks.data import user_rows
from benchmarks.framework import (
    CORE,
    ORM,
    RAW,
    USERSTORE,
    Run,
    Variant,
    Workload,
    as_fast_as_advanced_alchemy,
    at_most,
)
from benchmarks.scales import Scale
from benchmarks.stack import Stack
from benchmarks.workloads.common import USERS, default_engine_notes, orm_variants
from userstore import User, UserRepository


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
        ],
        reset=stack.raw.clear_users,
        check=lambda: stack.raw.expect_users(len(rows), number_sum),
        notes=default_engine_notes(stack),
        targets=(
            at_most("<=1.10x ORM on the same engine", USERSTORE, ORM, 1.10),
            as_fast_as_advanced_alchemy(),
        ),
    )
