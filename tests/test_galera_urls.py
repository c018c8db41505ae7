"""Several MariaDB hosts in one URL: checked before connecting, tried in turn, named if all fail."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import URL, make_url

import userstore
from tests import clusters
from tests.databases import require_target, throwaway_database
from userstore import ConfigurationError, DatabaseError, DatabaseUnavailableError
from userstore.galera import Host, hosts_of
from userstore.urls import resolve_url, shown_url

FLAVOURS = ("sync", "async")


def _engine(flavour: str, url: str | URL, **kwargs: object) -> object:
    if flavour == "sync":
        return userstore.create_engine(url, **kwargs)
    return userstore.create_async_engine(url, **kwargs)


def _ports_of_new_connections(flavour: str, url: str | URL, count: int = 1) -> list[int]:
    """The port of the node each of ``count`` new connections went to (no pool: each is new)."""
    if flavour == "sync":
        engine = userstore.create_engine(url, poolclass=sqlalchemy.NullPool)
        try:
            ports = []
            for _ in range(count):
                with engine.connect() as connection:
                    ports.append(int(connection.exec_driver_sql("SELECT @@port").scalar_one()))
            return ports
        finally:
            engine.dispose()

    async def ports() -> list[int]:
        engine = userstore.create_async_engine(url, poolclass=sqlalchemy.NullPool)
        try:
            found = []
            for _ in range(count):
                async with engine.connect() as connection:
                    result = await connection.exec_driver_sql("SELECT @@port")
                    found.append(int(result.scalar_one()))
            return found
        finally:
            await engine.dispose()

    return asyncio.run(ports())


def _free_port() -> int:
    """A loopback port nothing listens on (a host that refuses connections)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _hanging_up_server() -> Iterator[tuple[int, list[int]]]:
    """A server that accepts each connection and hangs up at once; yields (port, accepted)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            accepted.append(1)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), accepted
    finally:
        listener.close()
        thread.join(5)


@pytest.fixture
def galera_database(tmp_path: Path) -> Iterator[str]:
    """The name of an empty database on the Galera cluster."""
    require_target("galera")
    with throwaway_database("galera", tmp_path) as url:
        yield str(url.database)


def _multi_host_url(database: str, *ports: int) -> str:
    hosts = "&".join(f"host=127.0.0.1:{port}" for port in ports)
    return f"mariadb://root@/{database}?{hosts}"


def _galera_ports() -> list[int]:
    return [int(url.port or 3306) for url in clusters.GALERA_URLS]


# -- the URL ---------------------------------------------------------------------------


def test_a_multi_host_url_lists_its_hosts_in_order_with_their_ports():
    url = resolve_url("mariadb://root:pw@/db?host=10.0.0.1:3311&host=db-2&host=[::1]:3313")
    assert hosts_of(url) == (
        Host("10.0.0.1", 3311),
        Host("db-2", None),
        Host("::1", 3313),
    )
    assert [str(host) for host in hosts_of(url)] == ["10.0.0.1:3311", "db-2", "[::1]:3313"]


@pytest.mark.parametrize(
    "name",
    ["db_1.internal", "galera-3.example.com.", "x" * 63, ".".join(["x" * 63] * 3 + ["x" * 61])],
)
def test_any_well_formed_host_name_is_taken(name: str):
    url = resolve_url(f"mariadb://root@/db?host={name}:3306&host=127.0.0.1")
    assert hosts_of(url) == (Host(name, 3306), Host("127.0.0.1", None))


def test_a_url_without_host_parameters_has_no_host_list():
    assert hosts_of(resolve_url("mariadb://root@127.0.0.1:3306/db")) == ()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_url_keeps_its_hosts_and_gets_the_flavours_driver(flavour: str):
    url = resolve_url("mariadb://root@/db?host=a:1&host=b:2", flavour=flavour)  # type: ignore[arg-type]
    assert url.drivername == ("mariadb+pymysql" if flavour == "sync" else "mariadb+asyncmy")
    assert url.query["host"] == ("a:1", "b:2")


@pytest.mark.parametrize(
    "entry",
    [
        *["", "a:", ":3306", "a:0", "a:65536", "a:b", "a:3306:1", "[::1", "::1"],
        *["a b", "a/b", "a@b", "a..b", ".a", "..", "-a", "a-", "a.-b", "x" * 64],
        ".".join(["x" * 63] * 4) + ":3306",  # 255 characters: over 253
    ],
)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_malformed_host_is_a_configuration_error_before_anything_connects(
    flavour: str, entry: str
):
    url = URL.create("mariadb", "root", database="db", query={"host": ("127.0.0.1:3311", entry)})
    with pytest.raises(ConfigurationError, match=r"host parameter 2 of the URL must be host"):
        _engine(flavour, url)


@pytest.mark.parametrize(
    ("query", "position"),
    [("host=", 1), ("host=&host=", 1), ("host=db-1&host=", 2), ("host=db-1&host=%20&host=db-3", 2)],
)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_empty_host_in_a_url_string_is_refused_not_dropped(
    flavour: str, query: str, position: int
):
    # SQLAlchemy's parser drops blank values: the URL would name fewer hosts, or
    # none, and the driver would go to localhost, a server the URL never named.
    with pytest.raises(ConfigurationError, match=f"host parameter {position} of the URL is empty"):
        _engine(flavour, f"mariadb+pymysql://root@/db?{query}")


@pytest.mark.parametrize("entry", ["app:s3cret@10.0.0.1", "10.0.0.1:s3cret", "app:s3cret"])
def test_a_password_pasted_into_a_host_entry_stays_out_of_the_message(entry: str):
    url = URL.create("mariadb", "app", "s3cret", database="db", query={"host": (entry, "db-2")})
    with pytest.raises(ConfigurationError) as caught:
        userstore.create_engine(url)
    assert "s3cret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_the_message_for_a_malformed_host_shows_the_entry_and_never_the_password():
    url = "mariadb://root:s3cret@/db?host=db-1:3306&host=db-2:port"
    with pytest.raises(ConfigurationError) as caught:
        userstore.create_engine(url)
    assert "'db-2:port'" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["mariadb://root@db-0/db?host=db-1&host=db-2", "mariadb://root@:3306/db?host=db-1"],
)
def test_hosts_before_the_database_and_as_parameters_are_refused_together(url: str):
    with pytest.raises(ConfigurationError, match="not both"):
        userstore.create_engine(url)


def test_shown_url_masks_every_password_of_a_multi_host_url():
    shown = shown_url("mariadb://root:s3cret@/db?host=a:1&host=b:2&password=other")
    assert "s3cret" not in shown
    assert "other" not in shown
    assert make_url(shown).query["host"] == ("a:1", "b:2")
    assert make_url(shown).password == "***"


# -- connecting ------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_when_no_host_can_be_reached_the_error_names_every_host(flavour: str):
    first, second = _free_port(), _free_port()
    url = _multi_host_url("db", first, second)
    with pytest.raises(DatabaseUnavailableError) as caught:
        _ports_of_new_connections(flavour, url)
    message = str(caught.value)
    assert f"127.0.0.1:{first}: " in message
    assert f"127.0.0.1:{second}: " in message
    assert "none of the 2 MariaDB hosts could be used" in message
    assert caught.value.backend == "mariadb"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_connection_goes_to_the_first_host_that_accepts_it(flavour: str, galera_database: str):
    node1, node2, node3 = _galera_ports()
    assert _ports_of_new_connections(flavour, _multi_host_url(galera_database, node2, node3)) == [
        node2
    ]
    skipping = _multi_host_url(galera_database, _free_port(), node3, node1)
    assert _ports_of_new_connections(flavour, skipping) == [node3]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_new_connections_start_from_the_host_that_last_worked(flavour: str, galera_database: str):
    node1 = _galera_ports()[0]
    with _hanging_up_server() as (port, accepted):
        url = _multi_host_url(galera_database, port, node1)
        assert _ports_of_new_connections(flavour, url, count=5) == [node1] * 5
    assert len(accepted) == 1  # tried once, by the first connection only


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_galera_node_that_rejects_queries_is_skipped(flavour: str, galera_database: str):
    _, node2, node3 = _galera_ports()
    # The window is kept as short as one connection: every client of the node is refused in it.
    with rejecting_queries(node3):
        ports = _ports_of_new_connections(flavour, _multi_host_url(galera_database, node3, node2))
    assert ports == [node2]


@contextmanager
def rejecting_queries(port: int) -> Iterator[None]:
    """Make one Galera node refuse every query (``wsrep_reject_queries = ALL``) meanwhile."""
    admin = sqlalchemy.create_engine(
        clusters.GALERA_URLS[0].set(port=port),
        poolclass=sqlalchemy.NullPool,
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql("SET GLOBAL wsrep_reject_queries = ALL")
            try:
                yield
            finally:
                connection.exec_driver_sql("SET GLOBAL wsrep_reject_queries = NONE")
    finally:
        admin.dispose()


def test_a_wrong_password_is_not_tried_on_the_other_hosts(galera_database: str):
    node1, node2, _ = _galera_ports()
    url = f"mariadb://nobody:wrong@/{galera_database}?host=127.0.0.1:{node1}&host=127.0.0.1:{node2}"
    with pytest.raises(DatabaseError) as caught:
        _ports_of_new_connections("sync", url)
    assert not isinstance(caught.value, DatabaseUnavailableError)
    assert caught.value.code == 1045  # ER_ACCESS_DENIED_ERROR, from the first host


def test_migrations_and_the_repository_work_through_a_multi_host_url(galera_database: str):
    url = _multi_host_url(galera_database, _free_port(), *_galera_ports())
    engine = userstore.create_engine(url)
    try:
        userstore.migrations.upgrade(engine)
        userstore.migrations.check(engine)
        with userstore.create_session_factory(engine)() as session:
            repo = userstore.UserRepository(session)
            assert repo.add_many([("a", 1), ("b", 2)]) == 2
            repo.commit()
            assert [user.name for user in repo.list()] == ["a", "b"]
    finally:
        engine.dispose()
