"""Many tasks on one event loop, each with a session of its own: nothing lost, nothing doubled.

The async twin of tests/test_concurrency.py: there, separate OS processes race; here, tasks
interleave on one loop, sharing one engine and its pool (more tasks than pooled connections).
Stored rows are read back with a plain sync SQLAlchemy engine, without userstore's code.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import URL

from tests.async_support import Factory, async_engine_and_sessions, checked_out
from tests.databases import BACKENDS, migrated_database, stored_users
from userstore import AsyncUserRepository, DuplicateUserError, User

RACERS = 200
CONTESTED_NAMES = [f"contested{i:02d}" for i in range(50)]
NAMES_PER_RACER = 2  # so each name is tried by RACERS * NAMES_PER_RACER / 50 = 8 racers
WRITERS = 8
USERS_PER_WRITER = 500
USERS_PER_UNIT = 10


def _names_tried_by(racer: int) -> list[str]:
    """Consecutive contested names, in an order of the racer's own."""
    first = racer * NAMES_PER_RACER % len(CONTESTED_NAMES)
    names = [CONTESTED_NAMES[first + k] for k in range(NAMES_PER_RACER)]
    random.Random(racer).shuffle(names)
    return names


async def _race(factory: Factory, racer: int, start: asyncio.Event) -> list[tuple[str, str]]:
    """Try to add each name in a unit of work of its own; say what happened to each."""
    outcomes = []
    async with factory() as session:
        repo = AsyncUserRepository(session)
        await start.wait()
        for name in _names_tried_by(racer):
            try:
                await repo.add(User(name=name, number=racer))
                await repo.commit()
                outcomes.append((name, "won"))
            except DuplicateUserError as error:
                named = "duplicate" if error.name == name else f"duplicate naming {error.name!r}"
                outcomes.append((name, named))
            except Exception as error:  # any other error is a finding: report it
                outcomes.append((name, f"{type(error).__name__}: {error}"))
    return outcomes


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_contested_name_is_won_exactly_once_by_tasks_racing_on_one_loop(
    backend: str, tmp_path: Path
):
    async def race(url: URL) -> tuple[dict[int, list[tuple[str, str]]], float]:
        async with async_engine_and_sessions(url) as (engine, factory):
            start = asyncio.Event()
            racers = [asyncio.create_task(_race(factory, r, start)) for r in range(RACERS)]
            await asyncio.sleep(0)  # every racer has its session and waits at the start
            began = time.perf_counter()
            start.set()
            results = await asyncio.gather(*racers)
            elapsed = time.perf_counter() - began
            assert checked_out(engine) == 0
            return dict(enumerate(results)), elapsed

    with migrated_database(backend, tmp_path) as url:
        outcomes, elapsed = asyncio.run(race(url))
        stored = stored_users(url)

    unexpected = [
        (r, n, o) for r, res in outcomes.items() for n, o in res if o not in ("won", "duplicate")
    ]
    assert unexpected == []
    wins = Counter(name for res in outcomes.values() for name, o in res if o == "won")
    losses = Counter(name for res in outcomes.values() for name, o in res if o == "duplicate")
    tries = RACERS * NAMES_PER_RACER // len(CONTESTED_NAMES)
    assert wins == dict.fromkeys(CONTESTED_NAMES, 1)
    assert losses == dict.fromkeys(CONTESTED_NAMES, tries - 1)
    winners = {name: r for r, res in outcomes.items() for name, o in res if o == "won"}
    assert stored == winners
    print(
        f"\n[{backend}] {RACERS} tasks racing for {len(CONTESTED_NAMES)} names ({tries} each): "
        f"{len(winners)} won once each, {sum(losses.values())} DuplicateUserError, "
        f"0 other errors, {elapsed:.2f}s"
    )


async def _write(factory: Factory, writer: int, start: asyncio.Event) -> list[str]:
    """Add this writer's users, a few per unit of work; return any error met."""
    errors = []
    names = [f"w{writer}-user{i:04d}" for i in range(USERS_PER_WRITER)]
    async with factory() as session:
        repo = AsyncUserRepository(session)
        await start.wait()
        for first in range(0, len(names), USERS_PER_UNIT):
            try:
                for name in names[first : first + USERS_PER_UNIT]:
                    await repo.add(User(name=name, number=writer))
                await repo.commit()
            except Exception as error:  # any error is a finding: report it
                errors.append(f"{type(error).__name__}: {error}")
    return errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_tasks_adding_distinct_users_on_one_loop_lose_none(backend: str, tmp_path: Path):
    async def write(url: URL) -> tuple[list[list[str]], float]:
        async with async_engine_and_sessions(url) as (engine, factory):
            start = asyncio.Event()
            writers = [asyncio.create_task(_write(factory, w, start)) for w in range(WRITERS)]
            await asyncio.sleep(0)
            began = time.perf_counter()
            start.set()
            errors = await asyncio.gather(*writers)
            elapsed = time.perf_counter() - began
            assert checked_out(engine) == 0
            return errors, elapsed

    with migrated_database(backend, tmp_path) as url:
        errors, elapsed = asyncio.run(write(url))
        stored = stored_users(url)

    assert errors == [[]] * WRITERS
    expected = {f"w{w}-user{i:04d}": w for w in range(WRITERS) for i in range(USERS_PER_WRITER)}
    assert len(stored) == WRITERS * USERS_PER_WRITER == 4_000
    assert stored == expected
    print(
        f"\n[{backend}] {WRITERS} tasks x {USERS_PER_WRITER} users "
        f"({USERS_PER_UNIT} per unit of work): {len(stored)} stored in {elapsed:.2f}s, lost 0"
    )
