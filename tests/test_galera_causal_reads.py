"""causal_reads=True: a read on one Galera node sees what another node committed just before.

Without it a node may answer before it has applied a write set the cluster
already committed (Galera replicates synchronously but applies
asynchronously), so a read right after a commit elsewhere can be stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy import URL, Engine

import userstore
from tests import clusters
from tests.databases import migrated_database, require_target
from tests.replication import Cluster
from userstore import ConfigurationError, UserRepository

ITERATIONS = 2_000
ROWS = 20  # written by each iteration
LAGGING_ITERATIONS = 200


@pytest.fixture(scope="module")
def galera_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A migrated database on the Galera cluster (the first node's URL)."""
    require_target("galera")
    with migrated_database("galera", tmp_path_factory.mktemp("causal")) as url:
        yield url


def _on_node(url: URL, node: int) -> URL:
    return clusters.galera_urls(str(url.database))[node]


def _stale_reads(writer: Engine, reader: Engine, iterations: int) -> int:
    """Write on one node, read at once on another; return how often the read missed the write."""
    write = userstore.create_session_factory(writer)
    read = userstore.create_session_factory(reader)
    misses = 0
    with write() as writing, read() as reading:
        writer_repo, reader_repo = UserRepository(writing), UserRepository(reading)
        for number in range(iterations):
            # A write set of some size, so the other node's applier has something to do.
            writer_repo.upsert_many([(f"counter {i:02d}", number) for i in range(ROWS)])
            writer_repo.commit()
            seen = reader_repo.get(f"counter {ROWS - 1:02d}")
            reader_repo.commit()
            if seen is None or seen.number != number:
                misses += 1
    return misses


def test_a_write_on_one_node_is_always_seen_by_an_immediate_read_on_another_with_causal_reads(
    galera_url: URL, record_property: pytest.RecordProperty
):
    writer = userstore.create_engine(_on_node(galera_url, 0))
    reader = userstore.create_engine(_on_node(galera_url, 1), causal_reads=True)
    try:
        misses = _stale_reads(writer, reader, ITERATIONS)
    finally:
        writer.dispose()
        reader.dispose()
    record_property("stale_reads_with_causal_reads", f"{misses}/{ITERATIONS}")
    print(f"causal_reads=True: {misses} of {ITERATIONS} reads missed the write just committed")
    assert misses == 0


@pytest.mark.parametrize("causal_reads", [True, False], ids=["causal", "control"])
def test_while_the_reading_node_lags_only_causal_reads_keep_a_read_from_missing_the_write(
    galera_url: URL, causal_reads: bool, record_property: pytest.RecordProperty
):
    # The reading node's applier is held on and off, so it lags behind the cluster
    # for certain. The control (causal_reads=False) shows the experiment sees a
    # stale read at all; unslowed, a fast machine may apply every write set before
    # the read arrives.
    reader_url = _on_node(galera_url, 1)
    writer = userstore.create_engine(_on_node(galera_url, 0))
    reader = userstore.create_engine(reader_url, causal_reads=causal_reads)
    try:
        with Cluster("galera", [reader_url]).slowed_replicas(galera_url):
            misses = _stale_reads(writer, reader, LAGGING_ITERATIONS)
    finally:
        writer.dispose()
        reader.dispose()
    label = "causal_reads" if causal_reads else "control"
    record_property(f"stale_reads_while_lagging_{label}", f"{misses}/{LAGGING_ITERATIONS}")
    print(f"{causal_reads=}, node lagging: {misses} of {LAGGING_ITERATIONS} reads missed the write")
    if causal_reads:
        assert misses == 0
    else:
        assert misses > LAGGING_ITERATIONS // 10


def test_async_engines_read_causally_too(galera_url: URL):
    async def run() -> tuple[int, int]:
        writer = userstore.create_async_engine(_on_node(galera_url, 0))
        reader = userstore.create_async_engine(_on_node(galera_url, 2), causal_reads=True)
        write = userstore.create_async_session_factory(writer)
        read = userstore.create_async_session_factory(reader)
        misses = 0
        try:
            async with write() as writing, read() as reading:
                writer_repo = userstore.AsyncUserRepository(writing)
                reader_repo = userstore.AsyncUserRepository(reading)
                for number in range(ITERATIONS // 4):
                    await writer_repo.upsert("async counter", number)
                    await writer_repo.commit()
                    seen = await reader_repo.get("async counter")
                    await reader_repo.commit()
                    misses += seen is None or seen.number != number
            async with reader.connect() as connection:
                wait = (await connection.exec_driver_sql("SELECT @@wsrep_sync_wait")).scalar_one()
            return misses, int(wait)
        finally:
            await writer.dispose()
            await reader.dispose()

    assert asyncio.run(run()) == (0, 7)


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("value", [1, "yes", None])
def test_causal_reads_must_be_a_bool_before_anything_connects(flavour: str, value: object):
    create = userstore.create_engine if flavour == "sync" else userstore.create_async_engine
    with pytest.raises(ConfigurationError, match="causal_reads must be True or False"):
        create("mariadb://root@127.0.0.1:1/db", causal_reads=value)  # type: ignore[arg-type]


def test_causal_reads_on_one_server_reads_and_writes_as_ever(backend: str, fresh_database_url: URL):
    # One server is always causal: SQLite and PostgreSQL send nothing more, and a MariaDB
    # server that is no Galera node takes the setting and waits for nothing.
    engine = userstore.create_engine(fresh_database_url, causal_reads=True)
    statements: list[str] = []
    sqlalchemy.event.listen(
        engine, "before_cursor_execute", lambda _c, _u, sql, *_: statements.append(sql)
    )
    try:
        userstore.migrations.upgrade(engine)
        with userstore.create_session_factory(engine)() as session:
            repo = UserRepository(session)
            repo.add_many([("a", 1), ("b", 2)])
            repo.commit()
            assert [(user.name, user.number) for user in repo.list()] == [("a", 1), ("b", 2)]
        if backend == "mariadb":
            with engine.connect() as connection:
                assert connection.exec_driver_sql("SELECT @@wsrep_sync_wait").scalar_one() == 7
    finally:
        engine.dispose()
    assert not [sql for sql in statements if "wsrep_sync_wait" in sql and "SELECT" not in sql]
