"""A bulk write that cannot fit in one Galera write set is refused, clearly, and rolled back.

Galera replicates each transaction as one write set, bounded by the global
``wsrep_max_ws_rows`` and ``wsrep_max_ws_size`` (neither can be set for one
session). ``add_many`` reads them before writing and refuses a call that
cannot fit before sending it; what it cannot foresee (rows the unit of work
wrote before, the exact bytes) the server refuses, and that refusal arrives
as the same :class:`~userstore.WriteSetTooLargeError`.

The limits are lowered on one node for a moment, and put back at once: every
session on that node is bound by them meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy
from sqlalchemy import URL, event

from tests import clusters
from tests.databases import migrated_database, require_target
from tests.flavours import FlavouredEngine
from userstore import DatabaseError, User, WriteSetTooLargeError

BULK_INSERT = "INSERT INTO users (name, number) VALUES (%s, %s)"
NODE = 2  # the third node: lowered limits there bother the fewest other tests


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A migrated database on the Galera cluster, as one node's URL."""
    require_target("galera")
    with migrated_database("galera", tmp_path_factory.mktemp("write_sets")) as url:
        yield clusters.galera_urls(str(url.database))[NODE]


@pytest.fixture
def store(node_url: URL, flavour: str) -> Iterator[FlavouredEngine]:
    engine = FlavouredEngine(flavour, node_url)
    with engine.connect() as connection:
        connection.exec_driver_sql("DELETE FROM users")
        connection.commit()
    yield engine
    engine.dispose()


@contextmanager
def lowered(node_url: URL, variable: str, value: int) -> Iterator[None]:
    """Set a global wsrep limit on the node for the block, then put the default back."""
    admin = sqlalchemy.create_engine(
        node_url, poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as connection:
            default = connection.exec_driver_sql(f"SELECT @@global.{variable}").scalar_one()
            connection.exec_driver_sql(f"SET GLOBAL {variable} = {value}")
            try:
                yield
            finally:
                connection.exec_driver_sql(f"SET GLOBAL {variable} = {default}")
    finally:
        admin.dispose()


def _stored(store: FlavouredEngine) -> list[str]:
    with store.connect() as connection:
        return [
            row[0] for row in connection.exec_driver_sql("SELECT name FROM users ORDER BY name")
        ]


def _inserts(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.lstrip().upper().startswith("INSERT")]


@pytest.fixture
def sent(store: FlavouredEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(store.sync_engine, "before_cursor_execute", record)
    yield statements
    event.remove(store.sync_engine, "before_cursor_execute", record)


def test_add_many_of_more_rows_than_a_write_set_holds_is_refused_before_any_insert(
    store: FlavouredEngine, node_url: URL, sent: list[str]
):
    with store.session() as session:
        repo = store.repository(session)
        repo.add(User(name="kept", number=1))
        repo.commit()
        repo.add(User(name="staged", number=2))
        with lowered(node_url, "wsrep_max_ws_rows", 100):
            sent.clear()
            with pytest.raises(WriteSetTooLargeError) as caught:
                repo.add_many([(f"user {i:03d}", i) for i in range(101)])
            refused_inserts = _inserts(sent)
            assert repo.add_many([(f"user {i:03d}", i) for i in range(100)]) == 100  # fits
            repo.commit()
        message = str(caught.value)
        assert "add_many of 101 rows" in message
        assert "at most 100 rows (wsrep_max_ws_rows)" in message
        assert "the unit of work was rolled back" in message
        assert caught.value.code is None
        assert caught.value.backend == "mariadb"
        assert isinstance(caught.value, DatabaseError)
        assert BULK_INSERT not in refused_inserts
        assert len(refused_inserts) == 1  # the staged user's, flushed first
        assert repo.exists("staged") is False  # rolled back with the unit of work
    stored = _stored(store)
    assert len(stored) == 101
    assert "kept" in stored
    assert "staged" not in stored


def test_a_stream_is_refused_before_the_batch_that_would_overflow_the_write_set(
    store: FlavouredEngine, node_url: URL, sent: list[str]
):
    with store.session() as session:
        repo = store.repository(session)
        with lowered(node_url, "wsrep_max_ws_rows", 100):
            sent.clear()
            with pytest.raises(WriteSetTooLargeError, match="at least 120 rows"):
                repo.add_many(((f"user {i:03d}", i) for i in range(150)), batch_size=60)
        assert _inserts(sent) == [BULK_INSERT]  # the first batch only
        repo.add(User(name="after", number=1))
        repo.commit()
    assert _stored(store) == ["after"]


def test_rows_the_call_cannot_foresee_are_refused_by_the_server_as_the_same_error(
    store: FlavouredEngine, node_url: URL
):
    with store.session() as session:
        repo = store.repository(session)
        with lowered(node_url, "wsrep_max_ws_rows", 100):
            for i in range(60):
                repo.add(User(name=f"staged {i:02d}", number=i))
            assert repo.count() == 60  # flushed: 60 rows in the write set already
            with pytest.raises(WriteSetTooLargeError) as caught:
                repo.add_many(((f"bulk {i:02d}", i) for i in range(60)), batch_size=25)
        assert caught.value.code == 1180
        assert "wsrep_max_ws_rows" in str(caught.value)
        assert "the unit of work was rolled back" in str(caught.value)
        assert repo.count() == 0  # the repository is usable, and nothing was kept
        repo.add(User(name="after", number=1))
        repo.commit()
    assert _stored(store) == ["after"]


def test_add_many_of_more_bytes_than_a_write_set_holds_is_refused_before_any_insert(
    store: FlavouredEngine, node_url: URL, sent: list[str]
):
    long_names = [("x" * 200 + f"{i:02d}", i) for i in range(10)]  # 2 kB of names alone
    with store.session() as session:
        repo = store.repository(session)
        with lowered(node_url, "wsrep_max_ws_size", 1024):
            sent.clear()
            with pytest.raises(WriteSetTooLargeError, match=r"wsrep_max_ws_size"):
                repo.add_many(long_names)
        assert _inserts(sent) == []
    assert _stored(store) == []


def test_a_write_set_over_the_byte_limit_is_refused_at_commit_as_the_same_error(
    store: FlavouredEngine, node_url: URL
):
    # 20 rows of 20-character names: under the bound add_many checks (each row's name
    # and 10 bytes), over what the write set really takes (about 80 bytes a row).
    rows = [(f"a user named {i:07d}", i) for i in range(20)]
    with store.session() as session:
        repo = store.repository(session)
        with lowered(node_url, "wsrep_max_ws_size", 1024):
            assert repo.add_many(rows) == 20
            with pytest.raises(WriteSetTooLargeError) as caught:
                repo.commit()
        assert caught.value.code == 1105
        assert "wsrep_max_ws_size" in str(caught.value)
        repo.add(User(name="after", number=1))
        repo.commit()
    assert _stored(store) == ["after"]


def test_a_server_without_galera_is_never_asked_for_write_set_limits(tmp_path_factory):
    with migrated_database("mariadb", tmp_path_factory.mktemp("plain")) as url:
        store = FlavouredEngine("sync", url)
        statements: list[str] = []
        event.listen(
            store.sync_engine,
            "before_cursor_execute",
            lambda _c, _u, sql, *_: statements.append(sql),
        )
        try:
            with store.session() as session:
                repo = store.repository(session)
                assert repo.add_many([(f"u{i}", i) for i in range(3)]) == 3
                assert repo.add_many([(f"v{i}", i) for i in range(3)]) == 3
                repo.commit()
        finally:
            store.dispose()
    assert [sql for sql in statements if "wsrep" in sql] == ["SHOW VARIABLES LIKE 'wsrep_on'"]
