"""Killed connections, restarted servers and a killed SQLite writer: nothing lost or corrupt."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import URL, make_url, text

from tests.databases import SERVER_URLS, kill_connections, migrated_database, stored_users
from tests.flavours import FlavouredEngine
from userstore import TransientDatabaseError, User, UserRepository

SERVERS = ["postgresql", "mariadb"]
MARIADB_PID_FILE = "/run/mysqld/mysqld.pid"  # Debian's, for the machine's own server
# Restarting a database server is for CI (.ci/run opts in), never a developer's by surprise.
restarts_servers = pytest.mark.skipif(
    os.environ.get("USERSTORE_ALLOW_SERVER_RESTARTS") != "1",
    reason="restarts this machine's database servers: USERSTORE_ALLOW_SERVER_RESTARTS=1 allows it",
)


class Server:
    """A migrated database on one server, an engine of the flavour under test, and a killer."""

    def __init__(self, backend: str, url: URL, stack: ExitStack, flavour: str) -> None:
        self.backend = backend
        self.url = url
        self.engine = FlavouredEngine(flavour, url)
        stack.callback(self.engine.dispose)
        self._stack = stack

    def repo(self) -> UserRepository:
        session = self.engine.session()
        self._stack.callback(session.close)
        return self.engine.repository(session)  # type: ignore[no-any-return]

    def server_ids(self) -> set[int]:
        """Server-side ids of every connection to this database but the asking one."""
        query = {
            "postgresql": "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
            "mariadb": "SELECT id FROM information_schema.processlist "
            "WHERE db = DATABASE() AND id <> CONNECTION_ID()",
        }[self.backend]
        admin = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.NullPool)
        try:
            with admin.connect() as connection:
                return set(connection.execute(text(query)).scalars())
        finally:
            admin.dispose()

    def kill(self, server_ids: set[int]) -> None:
        kill_connections(self.url, self.backend, server_ids)


@pytest.fixture
def server_on(tmp_path: Path, flavour: str) -> Iterator[Callable[[str], Server]]:
    with ExitStack() as stack:

        def open_server(backend: str) -> Server:
            url = stack.enter_context(migrated_database(backend, tmp_path / backend))
            return Server(backend, url, stack, flavour)

        yield open_server


@pytest.mark.parametrize("backend", SERVERS)
def test_a_killed_idle_pooled_connection_is_invisible_to_the_caller(
    backend: str, server_on: Callable[[str], Server]
):
    server = server_on(backend)
    first = server.repo()
    first.add(User(name="Jenny", number=1))
    first.commit()
    first.session.close()  # its connection goes back to the pool, idle
    pooled = server.server_ids()
    assert pooled

    server.kill(pooled)

    assert server.repo().get_one("Jenny").number == 1


@pytest.mark.parametrize("backend", SERVERS)
def test_a_connection_killed_mid_transaction_fails_that_unit_of_work_only(
    backend: str, server_on: Callable[[str], Server]
):
    server = server_on(backend)
    repo = server.repo()
    repo.add(User(name="committed", number=1))
    repo.commit()
    repo.add(User(name="in-flight", number=2))
    repo.count()  # the INSERT is sent; the transaction stays open
    server.kill(server.server_ids())

    with pytest.raises(TransientDatabaseError):
        repo.commit()

    assert repo.get("in-flight") is None  # the next call just works: no rollback() needed
    assert repo.get_one("committed").number == 1
    repo.add(User(name="retried", number=2))
    repo.commit()
    assert repo.count() == 2
    assert stored_users(server.url) == {"committed": 1, "retried": 2}


def _restart_commands(backend: str) -> list[list[str]] | None:
    """How to restart the local server, or None when this test cannot."""
    if make_url(SERVER_URLS[backend]).host not in ("127.0.0.1", "localhost"):
        return None
    if os.geteuid() != 0:
        return None
    if (
        backend == "postgresql"
        and shutil.which("pg_ctlcluster")
        and Path("/etc/postgresql").is_dir()
    ):
        (version,) = os.listdir("/etc/postgresql")
        return [
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"]
        ]
    if (
        backend == "mariadb"
        and shutil.which("mariadb-admin")
        and Path("/usr/sbin/mariadbd").exists()
    ):
        # This machine's own mariadbd, by its pid file: the Galera nodes of
        # .ci/clusters are mariadbd processes too, and must be neither waited
        # for nor mistaken for it by start-stop-daemon.
        return [
            [
                "sh",
                "-c",
                f"pid=$(cat {MARIADB_PID_FILE}) && "
                "mariadb-admin --protocol=tcp -h127.0.0.1 -uroot shutdown && "
                # shutdown returns before mariadbd has exited; start only once it has
                'while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done',
            ],
            [
                "start-stop-daemon",
                "--start",
                "--oknodo",
                "--background",
                "--pidfile",
                MARIADB_PID_FILE,
                "--exec",
                "/usr/sbin/mariadbd",
            ],
        ]
    return None


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            server.server_ids()
            return
        except sqlalchemy.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@restarts_servers
@pytest.mark.parametrize("backend", SERVERS)
def test_a_server_restarted_under_the_app_is_survived(
    backend: str, server_on: Callable[[str], Server]
):
    commands = _restart_commands(backend)
    if commands is None:
        pytest.skip(f"cannot restart the {backend} server from here (not local, or not root)")
    server = server_on(backend)
    repo = server.repo()
    repo.add(User(name="committed", number=1))
    repo.commit()
    idle = server.repo()
    idle.get("committed")
    idle.session.close()  # leaves an idle connection in the pool
    repo.add(User(name="in-flight", number=2))
    repo.count()

    for command in commands:
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    _wait_until_up(server)

    with pytest.raises(TransientDatabaseError):
        repo.commit()
    assert repo.get("in-flight") is None
    assert repo.get_one("committed").number == 1
    assert server.repo().get_one("committed").number == 1


_WRITER = """
import sys, userstore
from userstore import User, UserRepository
engine = userstore.create_engine(sys.argv[1])
with userstore.create_session_factory(engine)() as session:
    repo = UserRepository(session)
    for i in range(int(sys.argv[2])):
        repo.add(User(name=f"bulk{i:06d}", number=i))
    session.flush()
    print("committing", flush=True)
    repo.commit()
    print("committed", flush=True)
"""
ROWS = 60_000


@pytest.mark.parametrize("delay_ms", [0, 1, 2, 3, 5, 60])
def test_sigkill_during_a_large_sqlite_commit_keeps_all_or_nothing(tmp_path: Path, delay_ms: int):
    with migrated_database("sqlite", tmp_path) as url:
        path = url.database
        assert path is not None
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, url.render_as_string(), str(ROWS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "committing"
        time.sleep(delay_ms / 1000)
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        writer.stdout.close()

        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            (count,) = connection.execute("SELECT count(*) FROM users").fetchone()
        assert count in (0, ROWS)
        print(f"\n[sqlite] SIGKILL {delay_ms} ms into a {ROWS}-row commit: {count} rows kept")
