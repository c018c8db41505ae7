"""What userstore does differently on a MariaDB Galera cluster (several primaries, one data set).

- **Several hosts in one URL**, written as SQLAlchemy writes PostgreSQL's:
  ``mariadb://root@/db?host=10.0.0.1:3306&host=10.0.0.2&host=10.0.0.3:3307``. A new
  connection goes to the first host that accepts it and is ready (a Galera node
  that is joining, or cut off from the cluster's primary component, is
  skipped), starting from the host the last connection went to. When none can
  be used, :class:`~userstore.errors.DatabaseUnavailableError` names every host
  and why. A malformed host is :class:`~userstore.errors.ConfigurationError`
  before anything connects.
- **Causal reads** (``create_engine(..., causal_reads=True)``): every
  connection sets ``wsrep_sync_wait = 7``, so a read or a write waits until
  its node has applied every write the cluster committed before it began.
- **Errors**: a node that is not ready (error 1047) is a
  :class:`~userstore.errors.TransientDatabaseError` (its connection is dropped,
  so a retry connects afresh); a certification conflict (the loser of two
  units of work writing the same user on different nodes) arrives at
  ``COMMIT`` as error 1213, a transient deadlock; a write set over the
  cluster's ``wsrep_max_ws_rows`` or ``wsrep_max_ws_size`` is
  :class:`~userstore.errors.WriteSetTooLargeError`.
- **Write-set limits**: ``add_many`` reads the limits before it writes and
  refuses a bulk write that cannot fit, before sending it (:func:`check_bulk_insert`).
- **A migration lock that holds cluster-wide** (:func:`cluster_migration_lock`):
  ``GET_LOCK`` is local to one node, so on Galera the lock is a row in
  ``userstore_migration_lock``, with a lease.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import URL, Connection, Engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect

from userstore.db_errors import driver_error_code
from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    MigrationError,
    TransientDatabaseError,
    WriteSetTooLargeError,
)

__all__ = [
    "CAUSAL_READS_SETUP",
    "LOCK_TABLE",
    "Host",
    "check_bulk_insert",
    "check_causal_reads",
    "cluster_migration_lock",
    "configure",
    "hosts_of",
    "is_galera",
]


# -- several hosts in one URL ---------------------------------------------------


@dataclass(frozen=True)
class Host:
    """One host of a multi-host URL.

    Attributes:
        host: A name or an IP address (an IPv6 one without its brackets).
        port: The port, or ``None`` for the driver's default (3306).
    """

    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


_HOST_ENTRY: Final = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::(?P<port>[0-9]{1,5}))?"
)
# A DNS label (underscores too, as container networks use them) or an IPv4 octet.
_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _is_host_name(name: str) -> bool:
    """Whether ``name`` is a host name or IPv4 address: labels of 1 to 63 characters, 253 in all."""
    labels = name.removesuffix(".").split(".")  # a fully qualified name may end with a dot
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def hosts_of(url: URL) -> tuple[Host, ...]:
    """The hosts a MariaDB URL lists as ``host=`` query parameters, checked.

    Args:
        url: A resolved MariaDB URL.

    Returns:
        The hosts in the URL's order; empty when the URL has no ``host``
        parameter (its host, if any, is the usual one before the database).

    Raises:
        ConfigurationError: an entry is not ``host`` or ``host:port`` (a
            host name of labels of 1 to 63 characters, no empty label; port 1
            to 65535; an IPv6 address in brackets), or the URL also names a
            host or port before the database.
    """
    raw = url.query.get("host")
    if raw is None:
        return ()
    entries = (raw,) if isinstance(raw, str) else tuple(raw)
    if url.host or url.port is not None:
        raise ConfigurationError(
            "a MariaDB URL names its hosts either before the database "
            "(mariadb://user@host:port/db) or as host= parameters "
            "(mariadb://user@/db?host=a:3306&host=b:3306), not both"
        )
    hosts = []
    for position, entry in enumerate(entries, start=1):
        match = _HOST_ENTRY.fullmatch(entry)
        port = None if match is None or match["port"] is None else int(match["port"])
        if (
            match is None
            or (port is not None and not 1 <= port <= 65535)
            or (match["name"] is not None and not _is_host_name(match["name"]))
        ):
            # (A password pasted into the entry stays out of the message.)
            shown = entry.replace(url.password, "***") if url.password else entry
            raise ConfigurationError(
                f"host parameter {position} of the URL must be host or host:port "
                f"(port 1 to 65535, an IPv6 address in brackets), got {shown!r}"
            )
        hosts.append(Host(match["ipv6"] or match["name"], port))
    return tuple(hosts)


# MariaDB client and server error numbers after which another host may well work.
_TRY_ANOTHER_HOST: Final = frozenset(
    {
        1040,  # ER_CON_COUNT_ERROR: too many connections
        1047,  # WSREP has not yet prepared node for application use
        1053,  # ER_SERVER_SHUTDOWN
        1927,  # ER_CONNECTION_KILLED
        2002,  # CR_CONNECTION_ERROR (socket)
        2003,  # CR_CONN_HOST_ERROR: refused, unreachable, timed out
        2005,  # CR_UNKNOWN_HOST
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST: lost during the handshake
    }
)

# Whether a node can serve: not Galera at all (no wsrep_on, or OFF), or a
# Galera node that is ready and takes queries. On a node that is not ready
# the query itself fails with 1047 (it reads a table).
_READINESS: Final = (
    "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.SESSION_VARIABLES "
    "WHERE VARIABLE_NAME IN ('WSREP_ON', 'WSREP_REJECT_QUERIES') "
    "UNION ALL SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
    "WHERE VARIABLE_NAME = 'WSREP_READY'"
)


class _Rotation:
    """The hosts of one engine, and where the next connection starts looking."""

    def __init__(self, hosts: tuple[Host, ...]) -> None:
        self.hosts = hosts
        self.start = 0

    def order(self) -> list[int]:
        count = len(self.hosts)
        return [(self.start + offset) % count for offset in range(count)]


def _install_host_rotation(engine: Engine, hosts: tuple[Host, ...]) -> None:
    """Connect to the first usable host, starting from the one that last worked.

    Added ahead of the engine's other ``do_connect`` listener (they run in
    the order they were added), which it stands in for: the driver's refusal
    of an option is still :class:`ConfigurationError`.
    """
    rotation = _Rotation(hosts)

    def connect(dialect: Dialect, _record: object, cargs: Any, cparams: Any) -> DBAPIConnection:
        failures: list[str] = []
        codes: list[int] = []
        for index in rotation.order():
            host = rotation.hosts[index]
            params = {**cparams, "host": host.host}
            if host.port is None:
                params.pop("port", None)
            else:
                params["port"] = host.port
            try:
                dbapi_connection: DBAPIConnection = dialect.connect(*cargs, **params)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"the {dialect.driver} driver does not take these connection options "
                    f"(from the URL's query or connect_args): {exc}"
                ) from None
            except Exception as exc:
                code = driver_error_code(exc, "mariadb")
                if not isinstance(exc, OSError) and code not in _TRY_ANOTHER_HOST:
                    raise  # a wrong password or database: every host would say the same
                failures.append(f"{host}: {_one_line(exc)}")
                if isinstance(code, int):
                    codes.append(code)
                continue
            reason = _not_ready(dbapi_connection)
            if reason is None:
                rotation.start = index
                return dbapi_connection
            failures.append(f"{host}: {reason}")
            codes.append(1047)
            with contextlib.suppress(Exception):  # it is being dropped either way
                dbapi_connection.close()
        raise DatabaseUnavailableError(
            f"none of the {len(hosts)} MariaDB hosts could be used ({'; '.join(failures)})",
            code=codes[-1] if codes else None,
            backend="mariadb",
        )

    event.listen(engine, "do_connect", connect)


def _not_ready(dbapi_connection: DBAPIConnection) -> str | None:
    """Why a freshly opened connection's node cannot serve, or ``None`` if it can."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_READINESS)
        values = {str(name).upper(): str(value).upper() for name, value in cursor.fetchall()}
    except Exception as exc:
        if driver_error_code(exc, "mariadb") == 1047:
            return f"the Galera node is not ready ({_one_line(exc)})"
        raise
    finally:
        cursor.close()
    if values.get("WSREP_ON", "OFF") != "ON":
        return None
    if values.get("WSREP_READY") != "ON":
        return "the Galera node is not ready (wsrep_ready is OFF)"
    rejecting = values.get("WSREP_REJECT_QUERIES", "NONE")
    if rejecting != "NONE":
        return f"the Galera node rejects queries (wsrep_reject_queries is {rejecting})"
    return None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# -- causal reads ---------------------------------------------------------------------

CAUSAL_READS_SETUP: Final = "wsrep_sync_wait = 7"
"""Added to a MariaDB connection's session setup by ``causal_reads=True``.

``wsrep_sync_wait`` bits 1, 2 and 4 make reads, ``UPDATE``/``DELETE`` and
``INSERT``/``REPLACE`` wait until the node has applied every write set the
cluster ordered before the statement; on a server that is not a Galera node
it changes nothing. Reads alone would not do: an ``INSERT`` of a name that
another node's committed ``DELETE`` has freed would still find the row there
and fail as a duplicate (measured: 39 wrong duplicates in 300 with bit 1 only).
"""


def check_causal_reads(causal_reads: object) -> bool:
    """Return ``causal_reads``, refusing anything but a ``bool`` before anything connects.

    Raises:
        ConfigurationError: ``causal_reads`` is not ``True`` or ``False``.
    """
    if not isinstance(causal_reads, bool):
        raise ConfigurationError(f"causal_reads must be True or False, got {causal_reads!r}")
    return causal_reads


# -- errors --------------------------------------------------------------------------

# The server reports these two with generic numbers (ER_ERROR_DURING_COMMIT,
# ER_UNKNOWN_ERROR), so its fixed text, compared whole, is what tells them apart.
_WRITE_SET_REFUSALS: Final = {
    (1180, "wsrep_max_ws_rows exceeded"): "wsrep_max_ws_rows",
    (1105, "Maximum writeset size exceeded"): "wsrep_max_ws_size",
}
_NODE_NOT_READY: Final = 1047


def _install_error_handling(engine: Engine) -> None:
    """Drop a connection whose node is not ready, type a refused write set, and keep
    a failure that rolled the whole transaction back from being hidden by its savepoint.

    Runs after :func:`userstore.db_errors.install_error_translation`'s hook,
    whose table maps 1047 to a transient error; marking it a disconnect makes
    the pool open new connections (on a multi-host URL, to a ready node).

    A deadlock or certification conflict (1213) and a refused write set (1180)
    roll the whole transaction back, savepoints included; the ``ROLLBACK TO
    SAVEPOINT`` that SQLAlchemy then sends fails with 1305, which would be
    raised in their place (a plain error, never retried). It is raised as
    the failure that caused it instead.
    """

    @event.listens_for(engine, "handle_error")
    def _galera_error(context: ExceptionContext) -> BaseException | None:
        if context.is_pre_ping:
            return None
        orig = context.original_exception
        code = driver_error_code(orig, "mariadb")
        connection = context.connection
        info = None if connection is None or connection.invalidated else connection.info
        if code == _NODE_NOT_READY:
            context.is_disconnect = True
            return None
        if code == _NO_SUCH_SAVEPOINT and info is not None and _ROLLED_BACK in info:
            # (Kept, not popped: nested savepoints each fail in turn.)
            error_class, message, earlier_code = info[_ROLLED_BACK]
            return error_class(  # type: ignore[no-any-return]
                f"{message} (which took the unit of work's savepoints with it)",
                code=earlier_code,
                backend="mariadb",
            )
        # (What the translation hook returned; SQLAlchemy sets it only once one has.)
        error = _write_set_refusal(orig, code) or getattr(context, "chained_exception", None)
        if (
            code in _WHOLE_TRANSACTION_GONE
            and info is not None
            and isinstance(error, DatabaseError)
        ):
            # (Its text, not the error: that would keep the failed call's frames alive.)
            info[_ROLLED_BACK] = (type(error), str(error), error.code)
        return error if isinstance(error, WriteSetTooLargeError) else None

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _forget(connection: Connection) -> None:
        if not connection.invalidated:
            connection.info.pop(_ROLLED_BACK, None)


_NO_SUCH_SAVEPOINT: Final = 1305
_WHOLE_TRANSACTION_GONE: Final = frozenset({1213, 1180})
_ROLLED_BACK: Final = "userstore.galera.transaction_rolled_back_by"


def _write_set_refusal(orig: BaseException | None, code: object) -> WriteSetTooLargeError | None:
    """The typed error for the server's refusal of a write set over its limits, if it is one."""
    args: tuple[Any, ...] = getattr(orig, "args", ())
    message = args[1] if len(args) > 1 else None
    if not isinstance(code, int) or not isinstance(message, str):
        return None
    limit = _WRITE_SET_REFUSALS.get((code, message))
    if limit is None:
        return None
    return WriteSetTooLargeError(
        f"the Galera cluster refused the unit of work: its write set is over the "
        f"cluster's {limit}; commit it in smaller units of work "
        f"({type(orig).__name__}: {message}, error {code})",
        code=code,
        backend="mariadb",
    )


def configure(engine: Engine, hosts: tuple[Host, ...]) -> None:
    """Set up a MariaDB engine for Galera: host rotation (if ``hosts``) and error handling."""
    if hosts:
        _install_host_rotation(engine, hosts)
    _install_error_handling(engine)


# -- write-set limits ----------------------------------------------------------------

_IS_GALERA: Final = "userstore.galera.is_galera"
_WSREP_ON: Final = "SHOW VARIABLES LIKE 'wsrep_on'"
_READ_LIMITS: Final = (
    "SELECT @@session.wsrep_on, @@global.wsrep_max_ws_rows, @@global.wsrep_max_ws_size"
)


@dataclass(frozen=True)
class _Limits:
    max_ws_rows: int | None  # None: no limit (the server's 0)
    max_ws_size: int


def is_galera(connection: Connection) -> bool:
    """Whether ``connection``'s server is a Galera node (``wsrep_on``), remembered per connection.

    Asked once per database connection; on a server without Galera (or
    without its variables) the answer is ``False``.
    """
    if connection.dialect.name not in ("mysql", "mariadb"):
        return False
    known = connection.info.get(_IS_GALERA)
    if known is None:
        row = connection.exec_driver_sql(_WSREP_ON).first()
        known = row is not None and str(row[1]).upper() == "ON"
        connection.info[_IS_GALERA] = known
    return bool(known)


def _write_set_limits(connection: Connection) -> _Limits | None:
    """The cluster's write-set limits for this session, or ``None`` when none apply.

    Read afresh at each bulk call on a Galera node (an operator may change
    them at any time); never asked of other servers.
    """
    if not is_galera(connection):
        return None
    wsrep_on, max_rows, max_size = connection.exec_driver_sql(_READ_LIMITS).one()
    if not int(wsrep_on):  # this session replicates nothing
        return None
    return _Limits(int(max_rows) or None, int(max_size))


# What a row certainly adds to a write set: its name, and at least 10 bytes
# for its number and two timestamps (measured: about twice the name, plus 40).
_ROW_BYTES_AT_LEAST: Final = 10


def check_bulk_insert(
    connection: Connection,
    earlier: int,
    batch: Sequence[tuple[str, int | None]],
    total: int | None,
) -> None:
    """Refuse, before it is sent, a bulk insert that cannot fit in one Galera write set.

    Args:
        connection: The unit of work's connection.
        earlier: Rows this call has already sent.
        batch: The rows about to be sent.
        total: Rows the call will send in all, when known (a sequence);
            then the first batch's check covers every row.

    Raises:
        WriteSetTooLargeError: the call's rows are more than
            ``wsrep_max_ws_rows``, or what they certainly add to the write set
            is more than ``wsrep_max_ws_size``. Nothing of the batch is sent.
    """
    if earlier and total is not None:
        return  # the first batch's check covered the whole call
    limits = _write_set_limits(connection)
    if limits is None:
        return
    rows = total if total is not None else earlier + len(batch)
    if limits.max_ws_rows is not None and rows > limits.max_ws_rows:
        raise WriteSetTooLargeError(
            f"add_many of {rows if total is not None else f'at least {rows}'} rows cannot be "
            f"committed on this Galera cluster, whose write sets hold at most "
            f"{limits.max_ws_rows} rows (wsrep_max_ws_rows); nothing of the call was sent: "
            "commit the rows in smaller units of work",
            backend="mariadb",
        )
    least = sum(len(name.encode()) + _ROW_BYTES_AT_LEAST for name, _ in batch)
    if least > limits.max_ws_size:
        raise WriteSetTooLargeError(
            f"a batch of {len(batch)} rows adds at least {least} bytes to the write set, and "
            f"this Galera cluster's write sets hold at most {limits.max_ws_size} bytes "
            "(wsrep_max_ws_size); nothing of the batch was sent: commit the rows in smaller "
            "units of work",
            backend="mariadb",
        )


# -- the migration lock --------------------------------------------------------------

LOCK_TABLE: Final = "userstore_migration_lock"
"""The table whose one row is the migration lock on Galera (outside the migrations' history)."""
_LOCK_NAME: Final = "userstore.migrations"
# How long a holder's claim lasts unless renewed: a holder that crashed
# stops others for at most this long. Renewed as the migration goes.
LOCK_LEASE_SECONDS: Final = 300
_RENEW_AFTER_SECONDS: Final = 30
_POLL_SECONDS: Final = 0.25

_CREATE_LOCK_TABLE: Final = text(
    f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} ("
    " name VARCHAR(64) NOT NULL PRIMARY KEY,"
    " holder VARCHAR(255) NOT NULL,"
    " expires_at DATETIME(6) NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
)
_CLAIM: Final = text(
    f"INSERT INTO {LOCK_TABLE} (name, holder, expires_at)"
    " VALUES (:name, :holder, UTC_TIMESTAMP(6) + INTERVAL :lease SECOND)"
)
_CLEAR_EXPIRED: Final = text(
    f"DELETE FROM {LOCK_TABLE} WHERE name = :name AND expires_at < UTC_TIMESTAMP(6)"
)
_RENEW: Final = text(
    f"UPDATE {LOCK_TABLE} SET expires_at = UTC_TIMESTAMP(6) + INTERVAL :lease SECOND"
    " WHERE name = :name AND holder = :holder"
)
_RELEASE: Final = text(f"DELETE FROM {LOCK_TABLE} WHERE name = :name AND holder = :holder")

# Answers to a claim that mean "someone else holds it (or is claiming it) now".
_TAKEN: Final = frozenset(
    {
        1062,  # ER_DUP_ENTRY: the holder's row is here
        1213,  # a claim on another node won certification
        1047,  # this node paused or not ready for a moment
    }
)
_NO_TABLE: Final = 1146  # ER_NO_SUCH_TABLE


def _code(exc: BaseException) -> object:
    if isinstance(exc, DatabaseError):
        return exc.code
    if isinstance(exc, sa_exc.DBAPIError):
        return driver_error_code(exc.orig, "mariadb")
    return None


# Looked up at each use, so a test can replace them.
_sleep: Callable[[float], None] = time.sleep
_monotonic: Callable[[], float] = time.monotonic


@contextmanager
def cluster_migration_lock(connection: Connection, timeout: float) -> Iterator[None]:
    """Hold the migration lock of ``connection``'s database across the whole Galera cluster.

    The lock is the row ``userstore.migrations`` of :data:`LOCK_TABLE`,
    inserted and deleted in autocommit on a connection of its own. A claim
    made at the same moment on another node loses certification (1213) or
    meets the holder's row (1062), and polls again. The row carries a lease:
    a holder renews it while the migration sends statements, and a claim
    clears a row whose lease has run out (its holder crashed), so no crash
    blocks migrations for longer than :data:`LOCK_LEASE_SECONDS`.

    Args:
        connection: The migration's connection (its engine gives the lock's).
        timeout: Seconds to wait for the lock before giving up.

    Raises:
        TransientDatabaseError: the lock did not come free within ``timeout``.
        MigrationError: the lease ran out while held (another migrator may
            have taken the lock): the migration stops.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    claim = {"name": _LOCK_NAME, "holder": holder, "lease": LOCK_LEASE_SECONDS}
    with connection.engine.connect() as lock_connection:
        lock_connection = lock_connection.execution_options(isolation_level="AUTOCOMMIT")
        _acquire(lock_connection, claim, timeout)
        renewed = [_monotonic()]

        def renew(*_: object) -> None:
            if _monotonic() - renewed[0] < _RENEW_AFTER_SECONDS:
                return
            renewed[0] = _monotonic()
            if lock_connection.execute(_RENEW, claim).rowcount != 1:
                raise MigrationError(
                    f"the migration lock's lease ({LOCK_LEASE_SECONDS}s) ran out while this "
                    "migration held it, and another migrator may hold it now; stopped"
                )

        event.listen(connection, "before_cursor_execute", renew)
        try:
            yield
        finally:
            event.remove(connection, "before_cursor_execute", renew)
            # If this fails (the node is gone), the lease frees the lock.
            with contextlib.suppress(sa_exc.SQLAlchemyError, DatabaseError):
                lock_connection.execute(_RELEASE, claim)


def _acquire(lock_connection: Connection, claim: dict[str, object], timeout: float) -> None:
    deadline = _monotonic() + timeout
    while not _claimed(lock_connection, claim):
        try:  # a holder that crashed leaves a row whose lease runs out
            lock_connection.execute(_CLEAR_EXPIRED, claim)
        except (sa_exc.DBAPIError, DatabaseError):
            lock_connection.rollback()  # (another claim won the row: poll again)
        if _monotonic() >= deadline:
            raise TransientDatabaseError(
                f"gave up waiting {timeout:g}s for the migration lock (a row of {LOCK_TABLE}, "
                "held by another migrator on the Galera cluster)",
                backend="mariadb",
            )
        _sleep(_POLL_SECONDS * (0.5 + random.random()))


def _claimed(lock_connection: Connection, claim: dict[str, object]) -> bool:
    """Try once to insert the lock row (creating its table first if need be): is it ours now?

    Raises:
        DatabaseError: a failure other than the lock being taken.
    """
    for statement, parameters in ((_CLAIM, claim), (_CREATE_LOCK_TABLE, {}), (_CLAIM, claim)):
        try:
            lock_connection.execute(statement, parameters)
            if statement is _CLAIM:
                return True
        except (sa_exc.DBAPIError, DatabaseError) as exc:
            lock_connection.rollback()  # (autocommit: this only ends SQLAlchemy's view of it)
            code = _code(exc)
            if code in _TAKEN:
                return False
            if code != _NO_TABLE or statement is not _CLAIM:
                raise
    return False  # (the table was dropped again between its creation and the claim)
