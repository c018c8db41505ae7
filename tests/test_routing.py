"""Read routing to replicas: where each statement goes, and reads that never go back in time.

Runs on three real topologies (see .ci/clusters): a PostgreSQL primary with a
hot standby streaming from it (``pg-replica``), a Galera cluster read through
two nodes while the first takes the writes (``galera``), and a plain MariaDB
primary with an asynchronous replica (``mariadb-replica``, MASTER_GTID_WAIT).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import sqlalchemy.ext.asyncio
from sqlalchemy import URL, Engine, event, text

import userstore
from tests.replication import LAG_SECONDS, Cluster, cluster_database
from userstore import InvalidReadTokenError, User, UserRepository
from userstore.asyncio import (
    AsyncUserRepository,
    create_async_engine,
    create_async_session_factory,
)
from userstore.engine import resolve_url
from userstore.positions import parse_token


@dataclass
class Statements:
    """Which engine each statement went to, by its first word."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def listen(self, engine: Engine, role: str) -> None:
        def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            self.sent.append((role, statement))

        event.listen(engine, "before_cursor_execute", record)

    def users(self) -> list[tuple[str, str]]:
        """Statements on the users table (not position checks), as (role, first word)."""
        return [
            (role, statement.split(None, 1)[0].upper())
            for role, statement in self.sent
            if "users" in statement
        ]

    def clear(self) -> None:
        self.sent.clear()


@dataclass
class Topology:
    cluster: Cluster
    primary_url: URL
    replica_urls: list[URL]
    engines: list[Engine] = field(default_factory=list)

    def engine(self, url: URL, **kwargs: object) -> Engine:
        engine = userstore.create_engine(url, **kwargs)  # type: ignore[arg-type]
        self.engines.append(engine)
        return engine

    def factory(self) -> tuple[Callable[..., sqlalchemy.orm.Session], Statements]:
        statements = Statements()
        primary = self.engine(self.primary_url)
        statements.listen(primary, "primary")
        replicas = []
        for url in self.replica_urls:
            replica = self.engine(url)
            statements.listen(replica, "replica")
            replicas.append(replica)
        return userstore.create_session_factory(primary, replicas=replicas), statements


@pytest.fixture(scope="module", params=["pg-replica", "galera", "mariadb-replica"])
def topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    """A migrated throwaway database on the cluster, with its primary and replica URLs."""
    with cluster_database(request.param) as (cluster, primary_url, replica_urls):
        engine = userstore.create_engine(primary_url)
        try:
            userstore.migrations.upgrade(engine)
        finally:
            engine.dispose()
        topology = Topology(cluster, primary_url, replica_urls)
        _wait_until_replicas_have_schema(topology)
        yield topology
        for engine in topology.engines:
            engine.dispose()


def _wait_until_replicas_have_schema(topology: Topology) -> None:
    deadline = time.monotonic() + 30
    for url in topology.replica_urls:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
        try:
            while True:
                try:
                    with engine.connect() as connection:
                        connection.execute(text("SELECT count(*) FROM users"))
                    break
                except sqlalchemy.exc.DBAPIError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            engine.dispose()


@pytest.fixture
def clean(topology: Topology) -> Topology:
    engine = sqlalchemy.create_engine(topology.primary_url, poolclass=sqlalchemy.NullPool)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM users"))
    engine.dispose()
    return topology


def test_reads_go_to_a_replica_and_writes_to_the_primary(clean: Topology) -> None:
    factory, statements = clean.factory()
    with factory() as session:
        repo = UserRepository(session)
        assert repo.get("jenny") is None
        assert repo.count() == 0
    assert statements.users() == [("replica", "SELECT"), ("replica", "SELECT")]
    statements.clear()
    with factory() as session:
        repo = UserRepository(session)
        repo.add(User(name="jenny", number=8675309))
        repo.commit()
    assert statements.users() == [("primary", "INSERT")]


def test_every_read_after_a_write_in_a_unit_of_work_goes_to_the_primary(clean: Topology) -> None:
    factory, statements = clean.factory()
    with factory() as session:
        repo = UserRepository(session)
        assert repo.get("jenny") is None  # before any write: a replica may serve it
        jenny = repo.add(User(name="jenny", number=8675309))
        # The notebook's flow: the query autoflushes the INSERT and returns the same object.
        assert session.query(User).filter_by(name="jenny").one() is jenny
        assert repo.count() == 1
        assert [user.name for user in repo.list()] == ["jenny"]
        repo.commit()
        assert not session.new
    assert statements.users() == [
        ("replica", "SELECT"),
        ("primary", "INSERT"),
        ("primary", "SELECT"),
        ("primary", "SELECT"),
        ("primary", "SELECT"),
    ]


def test_bulk_writes_upserts_and_locking_reads_go_to_the_primary(clean: Topology) -> None:
    factory, statements = clean.factory()
    with factory() as session:
        repo = UserRepository(session)
        assert repo.add_many([("a", 1), ("b", 2)]) == 2
        repo.upsert("c", 3)
        repo.upsert_many([("a", 10), ("d", 4)])
        repo.commit()
    with factory() as session:
        session.execute(sqlalchemy.select(User).with_for_update()).all()
        session.commit()
    assert {role for role, _ in statements.users()} == {"primary"}
    with factory() as session:
        assert UserRepository(session).count() == 4


def test_reads_see_every_commit_of_the_factory_while_the_replica_lags(clean: Topology) -> None:
    """Thousands of write-then-read pairs, the replica slowed down: no read goes back in time."""
    factory, statements = clean.factory()
    rounds = 2000
    stale = 0
    served: list[str] = []
    with clean.cluster.slowed_replicas(clean.primary_url):
        for i in range(rounds):
            with factory() as session:
                repo = UserRepository(session)
                repo.upsert("counter", i)
                repo.commit()
            if i % 20 == 0:  # now and then the replica gets time to catch up
                time.sleep(LAG_SECONDS * 4)
            statements.clear()
            with factory() as session:  # a new unit of work, as another request would have
                user = UserRepository(session).get("counter")
                if user is None or user.number != i:
                    stale += 1
            served += [role for role, _ in statements.users()]
    print(
        f"{clean.cluster.name}: {rounds} write-then-read rounds, {stale} stale; reads served by "
        f"the primary {served.count('primary')}, by a replica {served.count('replica')}"
    )
    assert stale == 0
    assert len(served) == rounds
    assert served.count("primary") > 0  # the lag was real
    assert served.count("replica") > 0  # and the replicas still served reads


def test_a_lagging_replica_really_returns_stale_rows_without_routing(clean: Topology) -> None:
    """The control for the test above: read the replica directly right after a commit."""
    factory, _ = clean.factory()
    replica = clean.engine(clean.replica_urls[0])
    stale = 0
    with clean.cluster.slowed_replicas(clean.primary_url):
        for i in range(20):
            with factory() as session:
                repo = UserRepository(session)
                repo.upsert("counter", 1000 + i)
                repo.commit()
            with replica.connect() as connection:
                number = connection.execute(
                    text("SELECT number FROM users WHERE name = 'counter'")
                ).scalar()
            stale += number != 1000 + i
    assert stale > 0


def test_once_the_replica_has_caught_up_reads_go_back_to_it(clean: Topology) -> None:
    factory, statements = clean.factory()
    with factory() as session:
        UserRepository(session).add(User(name="jenny", number=1))
        session.commit()
    deadline = time.monotonic() + 10
    while True:
        statements.clear()
        with factory() as session:
            assert UserRepository(session).get("jenny") is not None
        if statements.users() == [("replica", "SELECT")]:
            break
        assert time.monotonic() < deadline, "the replica never caught up"
        time.sleep(0.05)


def test_a_token_gives_another_process_the_same_guarantee(clean: Topology, tmp_path: Path) -> None:
    factory, _ = clean.factory()
    script = tmp_path / "reader.py"
    script.write_text(
        "import sys, userstore\n"
        "primary = userstore.create_engine(sys.argv[1])\n"
        "replicas = [userstore.create_engine(url) for url in sys.argv[3:]]\n"
        "factory = userstore.create_session_factory(primary, replicas=replicas)\n"
        "with factory(read_after=sys.argv[2]) as session:\n"
        "    user = userstore.UserRepository(session).get('carried')\n"
        "    print(user.number if user else 'missing')\n"
    )
    urls = [
        u.render_as_string(hide_password=False) for u in (clean.primary_url, *clean.replica_urls)
    ]
    with clean.cluster.slowed_replicas(clean.primary_url):
        for i in range(3):
            with factory() as session:
                repo = UserRepository(session)
                repo.upsert("carried", i)
                repo.commit()
                token = repo.read_token()
            assert parse_token(token).backend == clean.primary_url.get_backend_name().replace(
                "mysql", "mariadb"
            )
            reader = subprocess.run(
                [sys.executable, str(script), urls[0], token, *urls[1:]],
                capture_output=True,
                text=True,
                check=True,
            )
            assert reader.stdout.strip() == str(i)


def test_a_replica_that_is_down_is_skipped_without_an_error(clean: Topology) -> None:
    statements = Statements()
    primary = clean.engine(clean.primary_url)
    statements.listen(primary, "primary")
    dead = clean.engine(clean.replica_urls[0].set(port=1), connect_args={"connect_timeout": 2})
    live = clean.engine(clean.replica_urls[-1])
    statements.listen(live, "replica")
    factory = userstore.create_session_factory(primary, replicas=[dead, live])
    for _ in range(4):
        with factory() as session:
            assert UserRepository(session).get("nobody") is None
    assert statements.users() == [("replica", "SELECT")] * 4


def test_with_every_replica_down_the_primary_serves_reads(clean: Topology) -> None:
    statements = Statements()
    primary = clean.engine(clean.primary_url)
    statements.listen(primary, "primary")
    dead = clean.engine(clean.replica_urls[0].set(port=1), connect_args={"connect_timeout": 2})
    factory = userstore.create_session_factory(primary, replicas=[dead], replica_retry_after=0)
    for _ in range(3):
        with factory() as session:
            assert UserRepository(session).count() == 0
    assert statements.users() == [("primary", "SELECT")] * 3


def test_the_async_factory_routes_and_reads_its_writes(clean: Topology) -> None:
    async def scenario() -> tuple[int, list[str]]:
        primary = create_async_engine(clean.primary_url)
        replicas = [create_async_engine(url) for url in clean.replica_urls]
        roles: list[str] = []
        for engine, role in ((primary, "primary"), *((r, "replica") for r in replicas)):
            event.listen(
                engine.sync_engine,
                "before_cursor_execute",
                lambda *a, role=role: roles.append(role) if "users" in a[2] else None,
            )
        factory = create_async_session_factory(primary, replicas=replicas)
        stale = 0
        try:
            with clean.cluster.slowed_replicas(clean.primary_url):

                async def one_round(i: int) -> None:
                    nonlocal stale
                    async with factory() as session:
                        repo = AsyncUserRepository(session)
                        await repo.upsert(f"task{i % 4}", i)
                        await repo.commit()
                    async with factory() as session:  # any task of the process
                        user = await AsyncUserRepository(session).get(f"task{i % 4}")
                        stale += user is None or user.number < i

                for start in range(0, 400, 4):
                    await asyncio.gather(*(one_round(i) for i in range(start, start + 4)))
        finally:
            await primary.dispose()
            for replica in replicas:
                await replica.dispose()
        return stale, roles

    stale, roles = asyncio.run(scenario())
    assert stale == 0
    assert "primary" in roles


def test_a_malformed_read_token_is_refused_before_any_sql(clean: Topology) -> None:
    factory, statements = clean.factory()
    for token in ("", "postgresql:", "postgresql:zz/1", "mariadb:1-2", "x" * 5000, 42):
        with pytest.raises(InvalidReadTokenError):
            factory(read_after=token)
    assert statements.sent == []


@pytest.mark.parametrize(
    "replicas",
    [["not an engine"], "postgresql://", [sqlalchemy.create_engine("sqlite://")]],
    ids=["a string", "not a list", "another backend"],
)
def test_replicas_that_are_not_engines_of_the_primary_are_refused(
    clean: Topology, replicas: object
) -> None:
    primary = clean.engine(clean.primary_url)
    with pytest.raises(userstore.ConfigurationError):
        userstore.create_session_factory(primary, replicas=replicas)  # type: ignore[arg-type]


def test_a_plain_sqlalchemy_engine_is_refused_as_a_replica(clean: Topology) -> None:
    # Its failures are not userstore's: when it was down, the app got the error
    # instead of the read going elsewhere.
    primary = clean.engine(clean.primary_url)
    good = clean.engine(clean.replica_urls[0])
    plain = sqlalchemy.create_engine(clean.replica_urls[0])
    with pytest.raises(userstore.ConfigurationError, match="not a plain SQLAlchemy engine"):
        userstore.create_session_factory(primary, replicas=[good, plain])
    async_primary = create_async_engine(clean.primary_url)
    async_plain = sqlalchemy.ext.asyncio.create_async_engine(
        resolve_url(clean.replica_urls[0], flavour="async")
    )
    with pytest.raises(userstore.ConfigurationError, match=r"userstore\.create_async_engine"):
        userstore.create_async_session_factory(async_primary, replicas=[async_plain])
    asyncio.run(async_primary.dispose())
    asyncio.run(async_plain.dispose())
    plain.dispose()


def test_the_readme_scaling_out_example_runs_on_the_replicated_cluster() -> None:
    from tests.test_readme import readme_blocks

    (example,) = readme_blocks("python", "Reads on replicas that never go back in time")
    assert example.count('/test")') == 2
    with cluster_database("pg-replica") as (_cluster, primary_url, replica_urls):
        engine = userstore.create_engine(primary_url)
        userstore.migrations.upgrade(engine)
        engine.dispose()
        _wait_until_replicas_have_schema(Topology(_cluster, primary_url, replica_urls))
        adapted = example.replace('/test")', f'/{primary_url.database}")')
        exec(compile(adapted, "README.md", "exec"), {})


def test_delete_finds_the_user_on_the_primary_even_while_replicas_lag(clean: Topology) -> None:
    factory, statements = clean.factory()
    writer = userstore.create_session_factory(clean.engine(clean.primary_url))
    with clean.cluster.slowed_replicas(clean.primary_url):
        for i in range(50):
            with writer() as session:  # another process's write: this factory knows nothing of it
                UserRepository(session).add(User(name=f"gone{i}", number=i))
                session.commit()
            with factory() as session:
                UserRepository(session).delete(f"gone{i}")
                session.commit()
    assert {role for role, _ in statements.users()} == {"primary"}


def test_reads_after_add_many_or_its_rollback_stay_on_the_primary(clean: Topology) -> None:
    factory, statements = clean.factory()
    with factory() as session:
        repo = UserRepository(session)
        repo.add_many([("bulk1", 1), ("bulk2", 2)])
        assert repo.get("bulk1") is not None
        assert repo.count() == 2
        assert repo.exists("bulk2")
        repo.rollback()
        assert repo.get("bulk1") is None
    assert {role for role, _ in statements.users()} == {"primary"}


def test_a_unit_of_work_reading_a_replica_sees_what_the_factory_commits_meanwhile(
    clean: Topology,
) -> None:
    factory, _ = clean.factory()
    with clean.cluster.slowed_replicas(clean.primary_url), factory() as reader:
        reading = UserRepository(reader)
        for i in range(30):
            assert reading.count() == i  # the unit of work goes on reading
            with factory() as writer:
                UserRepository(writer).add(User(name=f"meanwhile{i}", number=i))
                writer.commit()
            assert reading.exists(f"meanwhile{i}")


# SQLAlchemy warns when the unit of work is rolled back after its COMMIT failed.
@pytest.mark.filterwarnings("ignore:transaction already deassociated:sqlalchemy.exc.SAWarning")
def test_a_commit_whose_reply_was_lost_is_still_seen_by_the_retry(clean: Topology) -> None:
    """The COMMIT lands, its reply does not: the runner's retry must find the row, not miss it."""
    factory, _ = clean.factory()
    primary = factory.kw["router"].primary
    dialect = primary.dialect
    real_commit = dialect.do_commit
    lost = []

    def commit_then_lose_the_reply(dbapi_connection: Any) -> None:
        real_commit(dbapi_connection)
        if not lost:  # the connection drops as the reply would have come
            lost.append(True)
            dbapi_connection.dbapi_connection.close()  # the driver's, not the pool's
            error = dialect.loaded_dbapi.OperationalError
            if dialect.name == "postgresql":
                raise error("server closed the connection unexpectedly")
            raise error(2013, "Lost connection to server during query")

    def add_ann_once(repo: UserRepository) -> User:
        return repo.get("Ann") or repo.add(User(name="Ann", number=1))

    dialect.do_commit = commit_then_lose_the_reply  # type: ignore[method-assign]
    with clean.cluster.slowed_replicas(clean.primary_url):
        for _ in range(5):
            lost.clear()
            ann = userstore.run_unit_of_work(factory, add_ann_once, attempts=3, backoff=0)
            assert ann.name == "Ann"
            assert lost  # the reply really was lost
            with factory() as session:
                UserRepository(session).delete("Ann")
                session.commit()


def test_locks_and_writes_hidden_inside_a_select_go_to_the_primary(clean: Topology) -> None:
    factory, statements = clean.factory()
    locked = sqlalchemy.select(User.name).with_for_update().scalar_subquery()
    with factory() as session:
        session.execute(sqlalchemy.select(User).where(User.name.in_(locked))).all()
        session.commit()
    assert statements.users() == [("primary", "SELECT")]


def test_the_sync_factory_refuses_async_replicas_and_absurd_retry_pauses(clean: Topology) -> None:
    primary = clean.engine(clean.primary_url)
    replica = create_async_engine(clean.replica_urls[0])
    with pytest.raises(userstore.ConfigurationError, match="create_engine"):
        userstore.create_session_factory(primary, replicas=[replica])  # type: ignore[list-item]
    asyncio.run(replica.dispose())
    for pause in (10**400, -1, float("nan"), "1", True):
        with pytest.raises(userstore.ConfigurationError, match="replica_retry_after"):
            userstore.create_session_factory(primary, replica_retry_after=pause)  # type: ignore[arg-type]


def test_reads_see_commits_made_with_synchronous_commit_off(clean: Topology) -> None:
    """An asynchronous commit's record may sit in the WAL buffers: the position must cover it."""
    if clean.cluster.name != "pg-replica":  # MariaDB: no such setting; nothing to check
        assert clean.cluster.name in ("galera", "mariadb-replica")
        return
    statements = Statements()
    primary = clean.engine(clean.primary_url, connect_args={"options": "-c synchronous_commit=off"})
    replica = clean.engine(clean.replica_urls[0])
    statements.listen(replica, "replica")
    factory = userstore.create_session_factory(primary, replicas=[replica])
    stale = 0
    for i in range(500):
        with factory() as session:
            UserRepository(session).upsert("async", i)
            session.commit()
        with factory() as session:
            user = UserRepository(session).get("async")
            stale += user is None or user.number != i
    assert stale == 0


def test_a_server_that_is_not_a_standby_is_never_behind_itself(clean: Topology) -> None:
    """The primary listed as its own replica (or a promoted standby) serves reads after writes."""
    statements = Statements()
    primary = clean.engine(clean.primary_url)
    itself = clean.engine(clean.primary_url)
    statements.listen(itself, "replica")
    factory = userstore.create_session_factory(primary, replicas=[itself])
    for i in range(5):
        with factory() as session:
            UserRepository(session).upsert("self", i)
            session.commit()
        statements.clear()
        with factory() as session:
            assert UserRepository(session).get_one("self").number == i
        assert statements.users() == [("replica", "SELECT")]
