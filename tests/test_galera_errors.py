"""Galera's own failures, raised for real on the cluster, arrive as userstore's errors.

- A certification conflict (two units of work on different nodes writing the
  same user): the loser gets error 1213 at COMMIT, a TransientDatabaseError,
  and ``run_unit_of_work`` runs it again until it lands.
- A node that is not ready (1047): transient, and its connection is dropped.
- A conflict that rolls the whole transaction back in the middle of a bulk
  write is that conflict, not the missing savepoint SQLAlchemy then trips on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pymysql
import pytest
import sqlalchemy
from sqlalchemy import URL, text
from sqlalchemy import exc as sa_exc

import userstore
from tests import clusters
from tests.clusters import RetryLog
from tests.databases import migrated_database, require_target
from userstore import TransientDatabaseError, UserRepository, run_unit_of_work
from userstore.db_errors import GALERA_ERROR_RULES, ErrorRule, classify

ROUNDS = 15


@pytest.fixture
def retry_log() -> Iterator[RetryLog]:
    with RetryLog.listening() as log:
        yield log


@pytest.fixture(scope="module")
def galera_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A migrated database on the Galera cluster (the first node's URL)."""
    require_target("galera")
    with migrated_database("galera", tmp_path_factory.mktemp("conflicts")) as url:
        yield url


def _node_urls(url: URL) -> list[URL]:
    return clusters.galera_urls(str(url.database))


@pytest.mark.parametrize("rule", GALERA_ERROR_RULES, ids=lambda r: f"{r.backend}-{r.code}")
def test_each_galera_rule_maps_its_class_and_code(rule: ErrorRule):
    error = rule.sqlalchemy_class("SQL", {}, pymysql.err.OperationalError(rule.code, rule.meaning))
    assert classify(error, "mysql") is rule.maps_to


def test_a_node_that_rejects_queries_raises_1047_as_a_transient_error_and_drops_the_connection(
    galera_url: URL,
):
    node3 = _node_urls(galera_url)[2]
    engine = userstore.create_engine(node3)
    admin = sqlalchemy.create_engine(
        node3, poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT count(*) FROM users"))  # connected before the window
            connection.commit()
            with admin.connect() as controller:
                controller.exec_driver_sql("SET GLOBAL wsrep_reject_queries = ALL")
                try:
                    with pytest.raises(TransientDatabaseError) as caught:
                        connection.execute(text("SELECT count(*) FROM users"))
                finally:
                    controller.exec_driver_sql("SET GLOBAL wsrep_reject_queries = NONE")
            assert caught.value.code == 1047
            assert "WSREP has not yet prepared node" in str(caught.value)
            assert connection.invalidated  # a retry gets a new connection
        with engine.connect() as connection:  # the node serves queries again, on a new connection
            assert connection.execute(text("SELECT @@wsrep_reject_queries")).scalar_one() == "NONE"
    finally:
        engine.dispose()
        admin.dispose()


def test_the_loser_of_a_certification_conflict_gets_1213_at_commit_as_a_transient_error(
    galera_url: URL,
):
    node1, node2, _ = _node_urls(galera_url)
    first, second = userstore.create_engine(node1), userstore.create_engine(node2)
    try:
        with userstore.create_session_factory(first)() as session:
            UserRepository(session).upsert("contested", 0)
            session.commit()
        with (
            userstore.create_session_factory(first)() as one,
            userstore.create_session_factory(second)() as two,
        ):
            winner, loser = UserRepository(one), UserRepository(two)
            loser.get_one("contested").number = 2
            loser.session.flush()  # its UPDATE holds the row on node 2
            winner.get_one("contested").number = 1
            winner.commit()  # certified first
            with pytest.raises(TransientDatabaseError) as caught:
                loser.commit()
            assert caught.value.code == 1213
            assert loser.get_one("contested").number == 1  # rolled back, and usable
    finally:
        first.dispose()
        second.dispose()


def test_conflicting_units_of_work_on_three_nodes_are_retried_until_each_lands(
    galera_url: URL, retry_log: RetryLog, record_property: pytest.RecordProperty
):
    engines = [userstore.create_engine(url) for url in _node_urls(galera_url)]
    factories = [userstore.create_session_factory(engine) for engine in engines]
    with factories[0]() as session:
        UserRepository(session).upsert("shared", -1)
        session.commit()
    attempts = [0, 0, 0]
    failures: list[BaseException] = []
    winners: list[int] = []

    def worker(node: int, barrier: threading.Barrier, round_: int) -> None:
        first_attempt = [True]

        def work(repo: UserRepository) -> int:
            attempts[node] += 1
            repo.get_one("shared").number = round_ * 10 + node
            repo.add(userstore.User(name=f"round {round_:02d} node {node}", number=node))
            repo.session.flush()  # the UPDATE holds the row on this node
            if first_attempt[0]:
                first_attempt[0] = False
                barrier.wait(30)  # all three hold it before any commits
            return node

        try:
            winners.append(run_unit_of_work(factories[node], work, attempts=20, backoff=0.01))
        except BaseException as error:
            failures.append(error)

    try:
        for round_ in range(ROUNDS):
            barrier = threading.Barrier(3)
            threads = [
                threading.Thread(target=worker, args=(node, barrier, round_)) for node in range(3)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert not failures, failures
    finally:
        for engine in engines:
            engine.dispose()

    conflicts = [r for r in retry_log.retries if getattr(r, "userstore_error_code", None) == 1213]
    record_property("certification_conflicts_retried", len(conflicts))
    print(f"{ROUNDS} rounds of 3 conflicting units of work: {len(conflicts)} conflicts retried")
    assert len(conflicts) == len(retry_log.retries) == sum(attempts) - 3 * ROUNDS
    # All three hold the row when the first commits: the other two lose, every round.
    assert len(conflicts) >= 2 * ROUNDS
    assert {r.userstore_stage for r in conflicts} <= {"at commit", "in the work"}  # type: ignore[attr-defined]
    assert all(r.userstore_error == "TransientDatabaseError" for r in conflicts)  # type: ignore[attr-defined]
    checker = sqlalchemy.create_engine(_node_urls(galera_url)[2], poolclass=sqlalchemy.NullPool)
    try:
        with checker.connect() as connection:
            connection.exec_driver_sql(clusters.GALERA_CAUSALITY)
            rows = dict(connection.exec_driver_sql("SELECT name, number FROM users").all())
    finally:
        checker.dispose()
    # Each unit of work landed exactly once, and the shared user holds a value of the last round.
    expected = {f"round {r:02d} node {n}": n for r in range(ROUNDS) for n in range(3)}
    assert {name: number for name, number in rows.items() if name.startswith("round")} == expected
    assert rows["shared"] in {(ROUNDS - 1) * 10 + node for node in range(3)}


def test_async_units_of_work_on_two_nodes_conflict_and_the_loser_is_retried(
    galera_url: URL, retry_log: RetryLog
):
    async def run() -> list[int]:
        engines = [userstore.create_async_engine(url) for url in _node_urls(galera_url)[:2]]
        factories = [userstore.create_async_session_factory(engine) for engine in engines]
        both_flushed = asyncio.Barrier(2)
        try:
            async with factories[0]() as session:
                await userstore.AsyncUserRepository(session).upsert("async shared", -1)
                await session.commit()

            async def unit(node: int) -> int:
                attempt = 0

                async def work(repo: userstore.AsyncUserRepository) -> int:
                    nonlocal attempt
                    attempt += 1
                    (await repo.get_one("async shared")).number = node
                    await repo.add(userstore.User(name=f"async node {node}", number=node))
                    await repo.session.flush()
                    if attempt == 1:
                        await asyncio.wait_for(both_flushed.wait(), 30)
                    return attempt

                return await userstore.run_unit_of_work_async(
                    factories[node], work, attempts=10, backoff=0.01
                )

            return list(await asyncio.gather(unit(0), unit(1)))
        finally:
            for engine in engines:
                await engine.dispose()

    attempts = asyncio.run(run())
    first, second = sorted(attempts)
    assert first == 1  # the winner
    assert second >= 2  # the loser, retried
    assert [getattr(r, "userstore_error_code", None) for r in retry_log.retries] == [1213] * (
        sum(attempts) - 2
    )


def test_a_conflict_in_the_middle_of_a_bulk_write_is_transient_not_a_missing_savepoint(
    galera_url: URL,
):
    node1, node2, _ = _node_urls(galera_url)
    bulk, other = userstore.create_engine(node1), userstore.create_engine(node2)
    applied = sqlalchemy.create_engine(node1, poolclass=sqlalchemy.NullPool)
    try:

        def rows() -> Iterator[tuple[str, int]]:
            yield from ((f"bulk {i:03d}", i) for i in range(100))
            # Batch one holds "bulk 000" on node 1; node 2 writes it and commits first:
            # node 1's applier aborts this unit of work (a brute-force abort).
            with userstore.create_session_factory(other)() as session:
                UserRepository(session).add(userstore.User(name="bulk 000", number=-1))
                session.commit()
            with applied.connect() as connection:  # returns once node 1 has applied it
                connection.exec_driver_sql(clusters.GALERA_CAUSALITY)
                connection.exec_driver_sql("SELECT number FROM users WHERE name = 'bulk 000'")
            yield from ((f"bulk {i:03d}", i) for i in range(100, 200))

        with userstore.create_session_factory(bulk)() as session:
            repo = UserRepository(session)
            with pytest.raises(TransientDatabaseError) as caught:
                repo.add_many(rows(), batch_size=100)
            assert caught.value.code == 1213
            assert "rolled back" in str(caught.value)
            assert repo.get("bulk 000") is not None  # the other unit of work's, and usable
            assert repo.get("bulk 150") is None
    finally:
        bulk.dispose()
        other.dispose()
        applied.dispose()


def test_a_savepoint_error_with_no_conflict_before_it_is_left_as_it_is(galera_url: URL):
    engine = userstore.create_engine(_node_urls(galera_url)[0])
    try:
        with engine.connect() as connection, pytest.raises(userstore.DatabaseError) as caught:
            connection.exec_driver_sql("ROLLBACK TO SAVEPOINT never_made")
        assert caught.value.code == 1305
        assert type(caught.value) is userstore.DatabaseError
    finally:
        engine.dispose()


def test_a_certification_conflict_is_an_operational_error_to_sqlalchemy(galera_url: URL):
    # What the table's 1213 row matches: the class as well as the code.
    node1, node2, _ = _node_urls(galera_url)
    engines = [
        sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool) for url in (node1, node2)
    ]
    try:
        with engines[0].begin() as connection:
            connection.exec_driver_sql("INSERT INTO users (name, number) VALUES ('plain', 0)")
        with engines[0].connect() as one, engines[1].connect() as two:
            one.exec_driver_sql("UPDATE users SET number = 1 WHERE name = 'plain'")
            two.exec_driver_sql("UPDATE users SET number = 2 WHERE name = 'plain'")
            one.commit()
            with pytest.raises(sa_exc.OperationalError) as caught:
                two.commit()
        assert caught.value.orig.args[0] == 1213  # type: ignore[union-attr]
    finally:
        for engine in engines:
            engine.dispose()
