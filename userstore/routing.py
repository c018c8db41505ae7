"""Sessions that read from replicas and never go back in time.

:func:`~userstore.create_session_factory` with ``replicas=`` gives sessions of
:class:`RoutingSession`. Each statement goes where it is safe:

* writes, flushes, ``SELECT ... FOR UPDATE``, the bulk paths and upserts (they
  take ``session.connection()``), reads that decide a write (``delete``'s
  lookup, anything under :func:`~userstore.engine.write_intent`), and every
  read in a unit of work that has written, go to the primary;
* other reads go to one replica per unit of work (replicas take turns), if
  that replica has replayed everything the factory's sessions have committed
  and everything the session's ``read_after`` token names. A replica that is
  behind is not used for that unit of work: the primary serves it (no
  waiting). A replica that cannot be reached is skipped for
  ``replica_retry_after`` seconds; with none usable, the primary serves reads.

How far is measured with the database's own positions (:mod:`userstore.positions`):
after a unit of work that wrote commits, the factory counts it; the next read
that wants a replica asks the primary for its position once
(``pg_current_wal_insert_lsn()``, ``@@gtid_binlog_pos``), which covers every commit
counted before, and checks the replica (``pg_last_wal_replay_lsn()``,
``WSREP_SYNC_WAIT_UPTO_GTID``/``MASTER_GTID_WAIT``). A write-only workload
thus pays nothing, and a read pays one round trip to each side only after
new writes.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql import ClauseElement, visitors
from sqlalchemy.sql.selectable import CompoundSelect, Select

from userstore.db_errors import backend_of, translates_errors
from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    InvalidReadTokenError,
    InvalidUserError,
    TransientDatabaseError,
)
from userstore.models import User
from userstore.positions import Position, format_token, parse_token, primary_position
from userstore.positions import replica_reached as _replica_reached
from userstore.sqlite import intends_to_write
from userstore.validation import validate_seconds

__all__ = ["ReadRouter", "RoutingSession", "UserStoreSession"]

DEFAULT_REPLICA_RETRY_AFTER: Final = 1.0


class UserStoreSession(Session):
    """The session of userstore's factories: a SQLAlchemy ``Session`` that takes a read token.

    Args:
        *args: As for ``Session``.
        read_after: A token from :meth:`~userstore.UserRepository.read_token`
            (of this or another process): reads in this session see at least
            what that token's writer had committed. Without replicas every
            read is on the primary, which always does.
        **kwargs: As for ``Session``.

    Raises:
        InvalidReadTokenError: ``read_after`` is not a read token.
    """

    def __init__(self, *args: Any, read_after: str | None = None, **kwargs: Any) -> None:
        self._read_after = None if read_after is None else parse_token(read_after)
        super().__init__(*args, **kwargs)
        if self.bind is not None and not isinstance(self, RoutingSession):
            self._check_token_backend(self.bind)

    def _check_token_backend(self, bind: Engine | Connection) -> None:
        """Refuse a token of another database: no position of it means anything here.

        ``sqlite:`` and ``memory:`` name no position, but given to a server's
        factory they still say the app mixed up its databases: refused too.
        """
        token = self._read_after
        if token is None:
            return
        backend = backend_of(bind.dialect.name)
        if token.backend != backend:
            raise InvalidReadTokenError(
                f"a {token.backend} read token cannot order reads on {backend}: "
                f"{format_token(token)!r}"
            )

    def read_position(self) -> Position:
        """The position a token from this session names: everything committed so far."""
        return position_of(self._primary_engine()).later(self._read_after)

    def read_token(self) -> str:
        """A token naming everything committed so far (see :meth:`read_position`)."""
        return format_token(self.read_position())

    def _primary_engine(self) -> Engine:
        bind = self.get_bind(User)
        return bind if isinstance(bind, Engine) else bind.engine


def position_of(engine: Engine) -> Position:
    """The primary's position now, asked on a connection of its own (SQLite: always met)."""
    backend = backend_of(engine.dialect.name)
    if backend == "sqlite":  # no replicas (and in-memory SQLite has one connection)
        return Position(backend)
    with engine.connect() as connection:
        return primary_position(connection)


class _Replica:
    """One replica engine and what the router knows of it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.down_until = 0.0
        self.reached: Position | None = None


class ReadRouter:
    """The state one routing factory shares across its sessions, threads and tasks.

    Args:
        primary: The engine every write goes to.
        replicas: Engines of replicas of that primary.
        retry_after: Seconds a replica that could not be reached is left alone.
    """

    def __init__(self, primary: Engine, replicas: Sequence[Engine], retry_after: float) -> None:
        self.primary = primary
        self.replicas = tuple(_Replica(engine) for engine in replicas)
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._turns = itertools.count()
        self._commits = 0  # units of work that wrote and committed
        self._resolved = 0  # commits the floor covers
        self._floor: Position | None = None

    @property
    def commits(self) -> int:
        """How many units of work that wrote have committed through this factory."""
        return self._commits

    def committed_a_write(self) -> None:
        """Count a unit of work that wrote and committed (called after its COMMIT returned)."""
        with self._lock:
            self._commits += 1

    def floor(self) -> Position | None:
        """The primary's position covering every counted commit (asks the primary if needed)."""
        with self._lock:
            commits, resolved, floor = self._commits, self._resolved, self._floor
        if commits == resolved:
            return floor
        position = position_of(self.primary)
        with self._lock:
            self._floor = position.later(self._floor)
            self._resolved = max(self._resolved, commits)
            return self._floor

    def take_turn(self) -> list[_Replica]:
        """The replicas in the order this unit of work tries them."""
        start = next(self._turns) % len(self.replicas)
        return [*self.replicas[start:], *self.replicas[:start]]

    def mark_down(self, replica: _Replica) -> None:
        replica.down_until = time.monotonic() + self.retry_after

    def note_reached(self, replica: _Replica, position: Position) -> None:
        with self._lock:
            replica.reached = position.later(replica.reached)


_PLAIN_READS: dict[object, bool] = {}  # statement shape -> whether a replica may run it
_PLAIN_READS_KEPT: Final = 4096


def _is_plain_read(clause: ClauseElement | None) -> bool:
    """Whether ``clause`` only reads: a SELECT with no lock and no write anywhere inside it.

    A lock or a write may hide in a subquery or a CTE (``IN (SELECT ... FOR
    UPDATE)``, ``WITH x AS (INSERT ... RETURNING)``), so the whole statement
    is walked, once per shape: the answer is kept by SQLAlchemy's cache key,
    which the statement memoizes and its execution computes anyway.
    """
    if isinstance(clause, Select):
        if clause._for_update_arg is not None:
            return False
    elif not isinstance(clause, CompoundSelect):
        return False
    cache_key = clause._generate_cache_key()
    if cache_key is None:  # a statement SQLAlchemy does not cache: walk it every time
        return not _locks_or_writes(clause)
    known = _PLAIN_READS.get(cache_key.key)
    if known is None:
        known = not _locks_or_writes(clause)
        if len(_PLAIN_READS) >= _PLAIN_READS_KEPT:
            _PLAIN_READS.clear()
        _PLAIN_READS[cache_key.key] = known
    return known


def _locks_or_writes(clause: ClauseElement) -> bool:
    return any(
        getattr(element, "_for_update_arg", None) is not None or getattr(element, "is_dml", False)
        for element in visitors.iterate(clause)
    )


class RoutingSession(UserStoreSession):
    """A session that sends reads to a replica that is caught up, and the rest to the primary.

    Built by :func:`~userstore.create_session_factory` (and the async
    factory) when given replicas; see :mod:`userstore.routing` for the rules.
    """

    def __init__(self, *args: Any, router: ReadRouter, **kwargs: Any) -> None:
        self._router = router
        self._wrote = False  # since the last commit: reads stay on the primary
        self._committing = False  # a COMMIT of a unit of work that wrote is under way
        self._replica: _Replica | None = None  # the one this unit of work reads from
        self._checked = 0  # the factory's commits that replica was checked against
        super().__init__(*args, **kwargs)
        self._check_token_backend(router.primary)

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: ClauseElement | None = None,
        bind: Any = None,
        **kwargs: Any,
    ) -> Engine | Connection:
        if bind is not None:
            return bind  # type: ignore[no-any-return]
        router = self._router
        if (
            self._flushing
            or (clause is not None and not _is_plain_read(clause))
            or intends_to_write()  # a read that decides a write (delete's lookup)
        ):
            self._wrote = True
            return router.primary
        if clause is None or self._wrote:
            return router.primary
        replica = self._replica
        if replica is None or (replica is not _PRIMARY and router.commits != self._checked):
            # First read of the unit of work, or the factory committed since the
            # replica was checked: a later read must see that commit too.
            self._checked = router.commits
            replica = self._replica = self._choose_replica(replica)
        return router.primary if replica is _PRIMARY else replica.engine

    def connection(self, *args: Any, **kwargs: Any) -> Connection:
        """The primary's connection, unless a bind is named: what it runs may write."""
        bind_arguments = kwargs.get("bind_arguments") or (args[0] if args else None)
        if not bind_arguments or bind_arguments.get("bind") is None:
            self._wrote = True
        return super().connection(*args, **kwargs)

    def read_position(self) -> Position:
        """Everything this factory's sessions committed, and this session's ``read_after``."""
        floor = self._router.floor()
        position = floor if floor is not None else super().read_position()
        return position.later(self._read_after)

    def _primary_engine(self) -> Engine:
        return self._router.primary

    def _choose_replica(self, current: _Replica | None) -> _Replica:
        """The replica this unit of work reads from now, or :data:`_PRIMARY`.

        ``current``, the replica the unit of work has read from, is kept if
        it is still far enough; otherwise the primary serves the rest of the
        unit of work (never another replica, which might be further behind).
        """
        router = self._router
        wanted = self._read_after
        floor = router.floor()
        if floor is not None:
            wanted = floor.later(wanted)
        now = time.monotonic()
        for replica in [current] if current is not None else router.take_turn():
            if replica.down_until > now:
                continue
            try:
                if wanted is not None and not (replica.reached and replica.reached.covers(wanted)):
                    with replica.engine.connect() as connection:
                        reached = _replica_reached(connection, wanted)
                    if reached is None:
                        continue  # behind: this unit of work reads elsewhere
                    router.note_reached(replica, reached)
                self._connection_for_bind(replica.engine)
            except TransientDatabaseError:  # down or unreachable: not the app's concern
                router.mark_down(replica)
                continue
            except DatabaseError:  # the replica could not answer this check: not for now
                continue
            return replica
        return _PRIMARY


_PRIMARY: Final = _Replica(None)  # type: ignore[arg-type]
"""Stands for the primary where a session keeps the replica its unit of work reads from."""


def _routing(session: Session) -> RoutingSession | None:
    return session if isinstance(session, RoutingSession) else None


@event.listens_for(RoutingSession, "before_commit")
def _committing(session: Session) -> None:
    routing = _routing(session)
    if routing is not None and not session.in_nested_transaction():
        routing._committing = True  # (the flush inside the commit may be the first write)


@event.listens_for(RoutingSession, "after_commit")
def _count_commit(session: Session) -> None:
    routing = _routing(session)
    if routing is None or session.in_nested_transaction():
        return  # a savepoint: the unit of work goes on
    routing._committing = False
    if routing._wrote:
        routing._wrote = False
        routing._router.committed_a_write()


@event.listens_for(RoutingSession, "after_transaction_end")
def _end_unit_of_work(session: Session, transaction: SessionTransaction) -> None:
    routing = _routing(session)
    if routing is None or transaction.parent is not None:
        return
    routing._replica = None
    if routing._committing and routing._wrote:
        # The COMMIT failed, or its reply was lost: it may have landed. Count
        # it, so a retry's reads cannot miss it on a replica.
        routing._router.committed_a_write()
    routing._committing = False


def check_replicas(
    primary: Engine, replicas: object, retry_after: object, *, asynchronous: bool = False
) -> ReadRouter:
    """Validate ``replicas=`` for a session factory and build its router.

    Raises:
        ConfigurationError: a replica is not an engine of the primary's
            backend and flavour, the primary is SQLite, or ``retry_after`` is
            not a non-negative number of seconds.
    """
    if isinstance(replicas, (str, bytes)) or not isinstance(replicas, Sequence):
        raise ConfigurationError(
            f"replicas must be a list of engines, got {type(replicas).__name__}"
        )
    engines: list[Engine] = []
    backend = backend_of(primary.dialect.name)
    for replica in replicas:
        sync = replica.sync_engine if asynchronous and hasattr(replica, "sync_engine") else replica
        if not isinstance(sync, Engine):
            origin = "create_async_engine" if asynchronous else "create_engine"
            raise ConfigurationError(
                f"each replica must be an engine from {origin}, got {type(replica).__name__}"
            )
        if backend_of(sync.dialect.name) != backend:
            raise ConfigurationError(
                f"a replica of a {backend} primary must be {backend}, got "
                f"{backend_of(sync.dialect.name)}"
            )
        if not translates_errors(sync):
            # A plain SQLAlchemy engine's failures are not userstore's: one
            # that is down could not be told from one that answered wrongly.
            origin = "create_async_engine" if asynchronous else "create_engine"
            raise ConfigurationError(
                f"each replica must be an engine from userstore.{origin}, not a plain "
                "SQLAlchemy engine"
            )
        engines.append(sync)
    if engines and backend == "sqlite":
        raise ConfigurationError("SQLite has no replicas: read routing needs PostgreSQL or MariaDB")
    try:
        seconds = validate_seconds(retry_after, field="replica_retry_after")
    except InvalidUserError as exc:
        raise ConfigurationError(str(exc)) from None
    return ReadRouter(primary, engines, seconds)


def token_from(session: Session) -> str:
    """The read token for everything committed so far, as seen by ``session``'s factory."""
    if isinstance(session, UserStoreSession):
        return session.read_token()
    bind = session.get_bind(User)
    return format_token(position_of(bind if isinstance(bind, Engine) else bind.engine))
