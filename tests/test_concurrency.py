"""Several OS processes writing at once: nothing lost, nothing doubled, every error typed."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import URL, Engine, text

import userstore
from tests.databases import migrated_database, worker_engine_options
from userstore import DuplicateUserError, User, UserRepository

PROCESSES = 4
UNITS_PER_PROCESS = 200


def _add_each_in_its_own_unit(
    url: str,
    options: dict[str, Any],
    worker: int,
    names: list[str],
    start: Barrier,
    results: multiprocessing.Queue,
) -> None:
    """Add each name in its own add+commit unit; report what happened to each."""
    engine = userstore.create_engine(url, **options)
    outcomes: list[tuple[str, str]] = []
    try:
        with userstore.create_session_factory(engine)() as session:
            repo = UserRepository(session)
            start.wait(60)
            for name in names:
                try:
                    repo.add(User(name=name, number=worker))
                    repo.commit()
                    outcomes.append((name, "won"))
                except DuplicateUserError as error:
                    outcomes.append((error.name, "duplicate"))
                except Exception as error:  # any other error is a finding: report it
                    outcomes.append((name, f"{type(error).__name__}: {error}"))
    finally:
        engine.dispose()
        results.put((worker, outcomes))


def _run_workers(
    url: URL, names_for: dict[int, list[str]], options: dict[str, Any] | None = None
) -> tuple[dict[int, list], float]:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(len(names_for))
    results = spawn.Queue()
    rendered = url.render_as_string(hide_password=False)
    workers = [
        spawn.Process(
            target=_add_each_in_its_own_unit, args=(rendered, options or {}, w, n, start, results)
        )
        for w, n in names_for.items()
    ]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=300) for _ in workers)
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    return outcomes, elapsed


def _stored(plain_engine: Engine) -> dict[str, int]:
    with plain_engine.connect() as connection:
        return {
            row.name: row.number
            for row in connection.execute(text("SELECT name, number FROM users"))
        }


@pytest.mark.not_on_fake(
    reason=(
        "its writers are OS processes sharing a database server; the fake lives"
        " in one process (threads race on it in tests/test_fake.py)"
    )
)
def test_processes_adding_distinct_users_lose_nothing(
    backend: str, database_url: URL, plain_engine: Engine, empty_table: None
):
    names_for = {
        w: [f"w{w}-user{i:04d}" for i in range(UNITS_PER_PROCESS)] for w in range(PROCESSES)
    }

    outcomes, elapsed = _run_workers(database_url, names_for, worker_engine_options(backend))

    assert all(result == "won" for o in outcomes.values() for _, result in o), outcomes
    expected = {name: w for w, names in names_for.items() for name in names}
    assert _stored(plain_engine) == expected
    print(
        f"\n[{backend}] {PROCESSES} processes x {UNITS_PER_PROCESS} add+commit units: "
        f"{len(expected)} users in {elapsed:.2f}s, lost 0"
    )


@pytest.mark.not_on_fake(
    reason=(
        "its writers are OS processes sharing a database server; the fake lives"
        " in one process (threads race on it in tests/test_fake.py)"
    )
)
def test_processes_racing_for_the_same_names_have_one_winner_each(
    backend: str, database_url: URL, plain_engine: Engine, empty_table: None
):
    names = [f"contested{i:04d}" for i in range(UNITS_PER_PROCESS)]
    shuffled = random.Random(7)
    names_for = {
        w: shuffled.sample(names, len(names)) if w % 2 else list(names) for w in range(PROCESSES)
    }

    outcomes, elapsed = _run_workers(database_url, names_for, worker_engine_options(backend))

    unexpected = [
        (w, n, r) for w, o in outcomes.items() for n, r in o if r not in ("won", "duplicate")
    ]
    assert unexpected == []
    winners = {name: w for w, o in outcomes.items() for name, result in o if result == "won"}
    wins = Counter(name for o in outcomes.values() for name, result in o if result == "won")
    losses = Counter(name for o in outcomes.values() for name, result in o if result == "duplicate")
    assert set(wins) == set(names)
    assert set(wins.values()) == {1}
    assert all(losses[name] == PROCESSES - 1 for name in names)
    assert _stored(plain_engine) == winners
    print(
        f"\n[{backend}] {PROCESSES} processes racing for {len(names)} names: "
        f"{len(winners)} won once each, {sum(losses.values())} DuplicateUserError, "
        f"0 other errors, {elapsed:.2f}s"
    )


def test_a_handful_of_sqlite_writers_never_see_database_is_locked(tmp_path: Path):
    # SQLite's rule alone: it has one database-wide write lock, the servers do not.
    names_for = {w: [f"s{w}-{i:04d}" for i in range(300)] for w in range(6)}
    with migrated_database("sqlite", tmp_path) as url:
        outcomes, elapsed = _run_workers(url, names_for)
        plain_engine = sqlalchemy.create_engine(url)
        try:
            stored = _stored(plain_engine)
        finally:
            plain_engine.dispose()

    failures = [r for o in outcomes.values() for _, r in o if r != "won"]
    assert failures == []
    assert len(stored) == 1800
    print(
        f"\n[sqlite] 6 processes x 300 single-row commits: 1800 users in {elapsed:.2f}s, 0 locked"
    )
