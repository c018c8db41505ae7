"""How far a database has got: the primary's commit position and a replica's replay position.

A position is the database's own: a WAL LSN on PostgreSQL, a GTID list on
MariaDB. Read-your-writes routing (:mod:`userstore.routing`) compares the
primary's position after a commit with what a replica has replayed, and a
read token (:func:`format_token`, :func:`parse_token`) carries a position to
another process as a short string, e.g. ``postgresql:0/3000148`` or
``mariadb:7-1-42``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, text

from userstore.db_errors import backend_of
from userstore.errors import InvalidReadTokenError, TransientDatabaseError

__all__ = ["Position", "format_token", "parse_token", "primary_position", "replica_reached"]

_MAX_TOKEN_LENGTH: Final = 2000
_LSN: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})", re.ASCII)
_GTID: Final = re.compile(r"([0-9]{1,10})-([0-9]{1,10})-([0-9]{1,20})", re.ASCII)
_MAX_DOMAIN: Final = 2**32 - 1  # MariaDB: domain and server ids are 32-bit,
_MAX_SEQUENCE: Final = 2**64 - 1  # sequence numbers 64-bit


@dataclass(frozen=True)
class Position:
    """A point in a database's history.

    Attributes:
        backend: ``"postgresql"``, ``"mariadb"`` or ``"sqlite"``.
        lsn: PostgreSQL: the WAL location as an integer.
        gtids: MariaDB: the last sequence number per replication domain, as
            ``(domain, server, sequence)`` triples; empty when the server
            keeps no binary log (then no replica can be shown to be caught up).
        known: False when the backend could not say (MariaDB without a binary
            log); such a position is met only by the primary.
    """

    backend: str
    lsn: int = 0
    gtids: tuple[tuple[int, int, int], ...] = ()
    known: bool = True

    def covers(self, other: Position | None) -> bool:
        """Whether a replica at this position has replayed everything up to ``other``."""
        if other is None or other.backend == "sqlite":
            return True
        if not other.known or not self.known or other.backend != self.backend:
            return False
        if self.backend == "postgresql":
            return self.lsn >= other.lsn
        mine = {domain: sequence for domain, _server, sequence in self.gtids}
        return all(mine.get(domain, -1) >= sequence for domain, _server, sequence in other.gtids)

    def later(self, other: Position | None) -> Position:
        """The later of two positions of one database (an unknown one wins: it is the stricter)."""
        if other is None or other.backend != self.backend:
            return self
        if not other.known or not self.known:
            return other if not other.known else self
        if self.backend == "postgresql":
            return self if self.lsn >= other.lsn else other
        if self.backend != "mariadb":
            return self  # SQLite and the fake: every position is met
        merged = {domain: (server, sequence) for domain, server, sequence in self.gtids}
        for domain, server, sequence in other.gtids:
            if sequence > merged.get(domain, (0, -1))[1]:
                merged[domain] = (server, sequence)
        return Position("mariadb", gtids=tuple(sorted((d, s, n) for d, (s, n) in merged.items())))

    @property
    def gtid_list(self) -> str:
        """MariaDB: the position as the server writes it (``7-1-42,8-2-5``)."""
        return ",".join(f"{d}-{s}-{n}" for d, s, n in self.gtids)


def format_token(position: Position) -> str:
    """Write a position as a read token: ``<backend>:<position>``."""
    if position.backend == "postgresql":
        return f"postgresql:{position.lsn >> 32:X}/{position.lsn & 0xFFFFFFFF:X}"
    if position.backend == "mariadb":
        return f"mariadb:{position.gtid_list if position.known else '?'}"
    return f"{position.backend}:"


def parse_token(token: object) -> Position:
    """Read a token written by :func:`format_token` (from a cookie, a header, another process).

    Raises:
        InvalidReadTokenError: ``token`` is not a string, is too long, or is
            not a token of any backend.
    """
    if not isinstance(token, str):
        raise InvalidReadTokenError(f"a read token is a str, got {type(token).__name__}")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise InvalidReadTokenError(
            f"a read token is at most {_MAX_TOKEN_LENGTH} characters, got {len(token)}"
        )
    backend, separator, value = token.partition(":")
    if separator and backend == "postgresql":
        match = _LSN.fullmatch(value)
        if match:
            return Position("postgresql", lsn=(int(match[1], 16) << 32) | int(match[2], 16))
    elif separator and backend == "mariadb":
        if value == "?":
            return Position("mariadb", known=False)
        parts = value.split(",") if value else []
        matches = [_GTID.fullmatch(part) for part in parts]
        if all(matches):
            gtids = tuple(sorted((int(m[1]), int(m[2]), int(m[3])) for m in matches if m))
            in_range = all(
                d <= _MAX_DOMAIN and s <= _MAX_DOMAIN and n <= _MAX_SEQUENCE for d, s, n in gtids
            )
            if in_range and len({domain for domain, _s, _n in gtids}) == len(gtids):
                return Position("mariadb", gtids=gtids)
    elif separator and backend in ("sqlite", "memory") and not value:
        return Position(backend)
    shown = token if len(token) <= 60 else token[:57] + "..."
    raise InvalidReadTokenError(
        f"not a read token: {shown!r} (expected e.g. 'postgresql:0/3000148' or 'mariadb:7-1-42')"
    )


def _parse_gtid_list(value: str | None) -> Position:
    if not value:
        return Position("mariadb", known=False)
    return parse_token(f"mariadb:{value}")


def primary_position(connection: Connection) -> Position:
    """The position of everything the primary has committed so far.

    PostgreSQL: ``pg_current_wal_insert_lsn()``, not ``pg_current_wal_lsn()``:
    with ``synchronous_commit = off`` a commit's record may still sit in the
    WAL buffers, past the position written so far. MariaDB:
    ``@@gtid_binlog_pos`` (with no binary log the position is unknown).
    SQLite has no replicas: its position is always met.
    """
    backend = backend_of(connection.dialect.name)
    if backend == "postgresql":
        value = connection.execute(text("SELECT pg_current_wal_insert_lsn()::text")).scalar_one()
        return parse_token(f"postgresql:{value}")
    if backend == "mariadb":
        return _parse_gtid_list(connection.execute(text("SELECT @@gtid_binlog_pos")).scalar())
    return Position(backend)


def replica_reached(connection: Connection, wanted: Position) -> Position | None:
    """Whether the replica behind ``connection`` has replayed ``wanted``; never waits.

    PostgreSQL: ``pg_last_wal_replay_lsn()`` on a standby; a server not in
    recovery (the primary itself, or a promoted standby) is judged by its own
    ``pg_current_wal_insert_lsn()`` (its replay position stays wherever its
    last recovery ended). MariaDB, in one round trip:
    ``WSREP_SYNC_WAIT_UPTO_GTID`` on a Galera node, ``MASTER_GTID_WAIT`` on an
    asynchronous replica, both with a timeout of 0; a server that replicates
    from nobody is judged by its own ``@@gtid_binlog_pos``.

    Returns:
        A position the replica is known to have reached (at least ``wanted``),
        or None if it has not replayed that far.
    """
    backend = backend_of(connection.dialect.name)
    if backend == "postgresql":
        value = connection.execute(
            text(
                "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                " ELSE pg_current_wal_insert_lsn() END)::text"
            )
        ).scalar()
        if value is None:  # a standby still restoring from its archive: not yet
            return None
        replayed = parse_token(f"postgresql:{value}")
        return replayed if replayed.covers(wanted) else None
    if backend != "mariadb":
        return wanted
    if not wanted.known:
        return None
    if not wanted.gtids:
        return wanted
    try:
        waited, logged = connection.execute(
            text(
                "SELECT IF(@@wsrep_on, WSREP_SYNC_WAIT_UPTO_GTID(:gtids, 0) - 1,"
                " MASTER_GTID_WAIT(:gtids, 0)), @@gtid_binlog_pos"
            ),
            {"gtids": wanted.gtid_list},
        ).one()
    except TransientDatabaseError:  # 1205: the Galera node has not applied it yet
        return None
    # MASTER_GTID_WAIT follows replication only: a server that is no replica
    # (the primary itself, a promoted replica) has what its own binary log holds.
    return wanted if waited == 0 or _parse_gtid_list(logged).covers(wanted) else None
