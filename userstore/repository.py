"""``UserRepository``: the verbs an app uses to store and find users."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, ParamSpec, TypeVar

from sqlalchemy import BigInteger, bindparam, exists, func, inspect, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, make_transient
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.orm.attributes import instance_state

from userstore import duplicates
from userstore.bulk import (
    DEFAULT_BATCH_SIZE,
    Batch,
    Row,
    UpsertResult,
    check_batch_size,
    insert_batch,
    last_of_each_name,
    upsert_batch,
    validated_batches,
)
from userstore.db_errors import backend_of, classify, is_unique_violation
from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    DuplicateUserError,
    InvalidUserError,
    TransientDatabaseError,
    UserNotFoundError,
    UserStoreError,
)
from userstore.galera import check_bulk_insert
from userstore.models import User
from userstore.observability.calls import observed, outside_the_call
from userstore.routing import token_from
from userstore.sqlite import write_intent
from userstore.validation import validate_limit, validate_name

# Statements are built once: building a select() per call costs more than
# the rest of a repository call. Values travel as bound parameters.
_EXISTS: Final = select(exists().where(User.name == bindparam("name")))
_COUNT: Final = select(func.count()).select_from(User)
_PAGE: Final = select(User).order_by(User.name)
_PAGE_AFTER: Final = _PAGE.where(User.name > bindparam("after"))
_LIMIT: Final = bindparam("limit", type_=BigInteger)  # LIMIT_MAX is 2**63 - 1
_LIST_STATEMENTS: Final = {
    (False, False): _PAGE,
    (True, False): _PAGE_AFTER,
    (False, True): _PAGE.limit(_LIMIT),
    (True, True): _PAGE_AFTER.limit(_LIMIT),
}
# Reads refresh users this session already holds, so they see the database;
# not while a change is staged but unflushed (autoflush off), which it would undo.
_FRESH: Final = {"populate_existing": True}
_AS_STAGED: Final[dict[str, bool]] = {}
# Takes SQLite's write lock without writing: a unit of work whose snapshot is
# stale fails here (SQLITE_BUSY_SNAPSHOT), so what it reads next is current.
_CLAIM_SQLITE_WRITE_LOCK: Final = text("UPDATE users SET name = name WHERE 0")
_LOADED_AMONG: Final = select(User).where(User.name.in_(bindparam("names", expanding=True)))
# What a failed database call can raise: SQLAlchemy's own errors (pool, ORM)
# and the engine's translated ones.
_FAILURES: Final = (sa_exc.SQLAlchemyError, DatabaseError)
# Where a session finds the users' database when it has only per-mapper binds.
_USER_BIND: Final = {"mapper": User}
# A user changed in this unit of work was deleted or renamed by another one.
_CONFLICTS: Final = (orm_exc.StaleDataError, orm_exc.ObjectDeletedError)
_P = ParamSpec("_P")
_T = TypeVar("_T")


class UserRepository:
    """Stores and finds users through one SQLAlchemy session (one unit of work).

    ``add`` and ``delete`` stage changes; ``commit`` writes the unit of work
    atomically; reads autoflush staged changes first, so they see them. When the
    database rejects a unit of work, whichever call sent it raises a
    :class:`~userstore.errors.UserStoreError`, the whole unit of work is rolled
    back, and the repository is ready for the next call. Each public call is
    one record on the ``userstore`` logger and, with OpenTelemetry set up, one
    span (see :mod:`userstore.observability`).

    Args:
        session: The session to work on, usually from
            :func:`~userstore.create_session_factory`. The caller owns it and
            closes it.

    Raises:
        InvalidUserError: ``session`` is not a ``Session``.
        ConfigurationError: ``session`` is a plain ``Session`` bound to no engine.
    """

    def __init__(self, session: Session) -> None:
        if not isinstance(session, Session):
            raise InvalidUserError(
                f"UserRepository takes a Session, got {type(session).__name__} "
                "(an AsyncSession goes to AsyncUserRepository)"
            )
        _check_bound(session)
        self._session = session
        # Shared by every repository on this session; see userstore.duplicates.
        self._ledger = duplicates.ledger(session)

    @property
    def session(self) -> Session:
        """The session this repository works on."""
        return self._session

    @observed("add")
    def add(self, user: User) -> User:
        """Stage a new user; it is written by the next flush or commit.

        Args:
            user: A ``User`` built with a valid name and number.

        A user loaded by an earlier unit of work (its session closed, or a
        copy) is staged as a new row too: a duplicate if its name is still
        stored, stored again if it was deleted meanwhile.

        Returns:
            The same object, now pending in the session.

        Raises:
            InvalidUserError: ``user`` is not a ``User``, its fields are
                invalid, it belongs to another open session, or it was
                deleted (build a new ``User`` to add the name again).
            DuplicateUserError: this session holds another ``User`` of this
                name and the database confirms it is stored; the unit of work
                was rolled back.
        """
        if not isinstance(user, User):
            raise InvalidUserError(f"add() takes a User, got {type(user).__name__}")
        state = instance_state(user)
        if state.deleted or state.was_deleted:
            raise InvalidUserError(
                f"User {user.name!r} was deleted; build a new User to add the name again"
            )
        owner = state.session
        if owner is None and state.key is not None:
            # Loaded by an earlier unit of work: add() stages an INSERT all the
            # same (a duplicate if the row is still stored, the user again if
            # it was deleted), never a silent re-attachment that writes nothing.
            make_transient(user)
        elif owner is not None and owner is not self._session:
            raise InvalidUserError(
                f"User {user.name!r} belongs to another session; add it there, or build a new User"
            )
        name = user.name
        if name is None:
            raise InvalidUserError("name is required, got None")
        # (The model validates name and number on every assignment.)
        key = (User, (name,), None)  # SQLAlchemy's identity key, built as it builds it
        existing = self._session.identity_map.get(key)
        if existing is not None and existing is not user and not inspect(existing).deleted:
            self._resolve_identity_conflict(key, name)
        self._session.add(user)
        return user

    def _resolve_identity_conflict(self, key: object, name: str) -> None:
        """Handle an add() whose name belongs to a user this session has loaded.

        SQLAlchemy would warn and then send an INSERT bound to fail, so the
        database is asked (after flushing, so a pending rename of the loaded
        user counts): if the name is stored, this is a duplicate. If not, and
        the loaded user still holds the name, another transaction deleted its
        row: the stale object, which the flush showed has no unwritten
        change, leaves the session.
        """
        if self._dialect_name() == "sqlite":
            self._send(self._session.execute, _CLAIM_SQLITE_WRITE_LOCK)
        if self.exists(name):
            self._discard_unit_of_work()
            raise DuplicateUserError(name)
        stale = self._session.identity_map.get(key)  # type: ignore[arg-type]
        # Only a user still filed under this very name is stale: one the flush
        # above renamed keeps its place, and its changes.
        if stale is not None and inspect(stale).key == key and not inspect(stale).deleted:
            self._session.expunge(stale)

    @observed("get")
    def get(self, name: str) -> User | None:
        """Return the user called ``name``, or ``None``.

        Staged changes are flushed first. The row is always read from the
        database; a user already loaded in this session is returned as the
        very same object, refreshed.

        Raises:
            InvalidUserError: ``name`` is not a valid name.
            DuplicateUserError: the autoflush of staged users hit a taken name.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        validate_name(name)
        return self._send(self._session.get, User, name, populate_existing=self._refreshing())

    @observed("get_one")
    def get_one(self, name: str) -> User:
        """Return the user called ``name``.

        Raises:
            UserNotFoundError: no such user.
            InvalidUserError: ``name`` is not a valid name.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        user = self.get(name)
        if user is None:
            raise UserNotFoundError(name)
        return user

    @observed("exists")
    def exists(self, name: str) -> bool:
        """Return whether a user called ``name`` exists (an EXISTS query).

        Raises:
            InvalidUserError: ``name`` is not a valid name.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        validate_name(name)
        return bool(self._send(self._flushed(self._session.scalar), _EXISTS, {"name": name}))

    @observed("count")
    def count(self) -> int:
        """Return the number of users, staged ones included.

        Raises:
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        return int(self._send(self._flushed(self._session.scalar), _COUNT) or 0)

    @observed("delete")
    def delete(self, name: str) -> None:
        """Delete the user called ``name`` within the current unit of work.

        Raises:
            UserNotFoundError: no such user.
            InvalidUserError: ``name`` is not a valid name.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        with write_intent():  # SQLite: wait for the write lock before reading
            user = self.get_one(name)
            self._session.delete(user)
            self._send(self._session.flush)

    @observed("list")
    def list(self, *, after: str | None = None, limit: int | None = None) -> builtins.list[User]:
        """Return users in Unicode code-point order of name, one keyset page at a time.

        Args:
            after: Return only names strictly greater than this one, usually
                the last name of the previous page.
            limit: The most users to return; ``None`` for all.

        Returns:
            The users, ordered as Python's ``sorted`` orders their names.

        Raises:
            InvalidUserError: ``after`` is not a valid name or ``limit`` is
                negative or not an int.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        if after is not None:
            validate_name(after, field="after")
        validate_limit(limit)
        statement = _LIST_STATEMENTS[(after is not None, limit is not None)]
        parameters = {"after": after, "limit": limit}
        options = _FRESH if self._refreshing() else _AS_STAGED
        return self._send(
            lambda: builtins.list(
                self._session.scalars(statement, parameters, execution_options=options)
            )
        )

    @observed("add_many")
    def add_many(self, users: Iterable[Row], *, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Insert many users in this unit of work, at close to the driver's own speed.

        Rows are ``User`` objects, ``(name, number)`` pairs or mappings with
        ``name`` and ``number``. They are written in batches (COPY on
        PostgreSQL, executemany elsewhere), so memory stays flat for any
        length of iterable. Like ``add``, nothing is committed: call
        ``commit()``. Every row of a batch is validated before the batch is
        sent; when the input is a sequence, that is every row before any SQL.

        Args:
            users: The rows to insert.
            batch_size: Rows per statement.

        Returns:
            The number of users inserted.

        Raises:
            InvalidUserError: a row or ``batch_size`` is invalid (the message
                names the row's position); nothing of this call is written,
                and the rest of the unit of work is kept.
            DuplicateUserError: a name is taken or repeats in the input; the
                unit of work was rolled back, so nothing of this call is written.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        inserted = 0

        total = len(users) if isinstance(users, Sequence) else None

        def insert(batch: Batch) -> None:
            nonlocal inserted
            # On Galera: a call the cluster's write-set limits refuse fails before it is sent.
            check_bulk_insert(self._session.connection(_USER_BIND), inserted, batch, total)
            self._insert_batch(batch)
            inserted += len(batch)

        self._write_in_batches(users, batch_size, insert)
        return inserted

    def _insert_batch(self, batch: Batch) -> None:
        # A savepoint per batch keeps the transaction alive after a conflict,
        # so the offending name is looked up where this call's earlier
        # batches and the unit of work's earlier writes are all visible.
        try:
            with self._session.begin_nested():
                insert_batch(self._session.connection(_USER_BIND), batch)
        except _FAILURES as exc:
            if not self._is_duplicate(exc):
                raise
            names = [name for name, _ in batch]
            raise DuplicateUserError(duplicates.name_in_transaction(self._session, names)) from exc
        self._ledger.note_bulk_write()

    def _write_in_batches(
        self, rows: Iterable[Row], batch_size: int, write: Callable[[Batch], None]
    ) -> None:
        """Validate rows batch by batch and write each, all or nothing.

        A sequence is validated whole before any SQL. Other iterables are
        validated a batch at a time, so memory stays flat, inside a savepoint:
        a bad row takes back this call's earlier batches and keeps the rest
        of the unit of work, as a bad row in a sequence does. Any database
        failure rolls the whole unit of work back. Staged changes are flushed
        first, so they keep their place ahead of the bulk rows.
        """
        check_batch_size(batch_size)
        batches = outside_the_call(validated_batches(rows, batch_size))  # the rows are the app's
        sequence = isinstance(rows, Sequence)
        if sequence:
            batches = iter(builtins.list(batches))
        with write_intent():  # SQLite: a bulk call waits for the write lock up front
            self._send(self._session.flush)
            try:
                if sequence:
                    self._write_each(batches, write)
                else:
                    with self._session.begin_nested():
                        self._write_each(batches, write)
            except (InvalidUserError, DuplicateUserError) as exc:
                if isinstance(exc, DuplicateUserError):
                    self._discard_unit_of_work()
                raise
            except _FAILURES as exc:
                raise self._failure(exc) from exc
            except BaseException as exc:
                if not isinstance(exc, Exception):  # nothing of an interrupted call is kept
                    self._discard_after_interruption()
                raise

    def _write_each(self, batches: Iterator[Batch], write: Callable[[Batch], None]) -> None:
        for batch in batches:
            write(batch)
            self._refresh_loaded(name for name, _ in batch)

    @observed("upsert")
    def upsert(self, name: str, number: int | None) -> User:
        """Insert the user, or set its number if the name exists, in one native statement.

        Concurrent upserts of the same name neither fail nor lose an update;
        ``updated_at`` moves only when the number changes.

        Returns:
            The user as stored, loaded into this session.

        Raises:
            InvalidUserError: ``name`` or ``number`` is invalid.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        self.upsert_many([(name, number)])
        user = self._send(self._session.get, User, name, populate_existing=True)
        assert user is not None  # written in this very transaction
        return user

    @observed("upsert_many")
    def upsert_many(
        self, rows: Iterable[Row], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> UpsertResult:
        """Insert new users and set the number of existing ones, one statement per batch.

        Never reads before writing, so concurrent upserts of the same names
        neither fail nor lose an update. Within one batch, a name given more
        than once counts once, with its last number. Users already loaded in
        this session are refreshed on their next access. Nothing is committed:
        call ``commit()``.

        Args:
            rows: ``User`` objects, ``(name, number)`` pairs or mappings.
            batch_size: Rows per statement.

        Returns:
            How many rows were inserted, updated (number changed) and unchanged.

        Raises:
            InvalidUserError: a row is invalid (the message names its position).
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        totals = UpsertResult(0, 0, 0)

        def upsert(batch: Batch) -> None:
            nonlocal totals
            result = upsert_batch(self._session.connection(_USER_BIND), last_of_each_name(batch))
            self._ledger.note_bulk_write()
            totals = UpsertResult(
                totals.inserted + result.inserted,
                totals.updated + result.updated,
                totals.unchanged + result.unchanged,
            )

        self._write_in_batches(rows, batch_size, upsert)
        return totals

    def iter_all(self, *, batch_size: int = 1000) -> Iterator[User]:
        """Yield every user in name order, holding only one batch in memory.

        Rows come in keyset pages of ``batch_size`` (``WHERE name > :last
        ORDER BY name LIMIT :batch_size``, on the primary key's index), one
        query each, the same on every backend and flavour: no cursor stays
        open between pages, so the session is free for other calls inside the
        loop, a commit inside the loop does not end it, and a slow reader
        holds nothing on the server. Every user that exists throughout the
        loop is yielded exactly once; users added or deleted meanwhile may or
        may not be. Users the caller does not keep are freed as it goes.

        Raises:
            InvalidUserError: ``batch_size`` is not a positive int (raised by
                this call, before any iteration).
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        check_batch_size(batch_size)
        return keyset_pages(self._page, batch_size)

    @observed("iter_all")
    def _page(self, *, after: str | None, limit: int) -> builtins.list[User]:
        """One page of ``iter_all``: a ``list`` call, observed as an ``iter_all`` call."""
        return self.list(after=after, limit=limit)

    def _refresh_loaded(self, names: Iterable[str]) -> None:
        """Reload, in one query, the users this session holds that a bulk write changed.

        They keep every value loaded (no expiry, so no lazy load later): read
        after the session closes, they show what the bulk write stored.
        """
        identity_map = self._session.identity_map
        if not len(identity_map):
            return
        loaded = set()
        for key in identity_map.keys():  # noqa: SIM118 - IdentityMap is not iterable
            user = identity_map.get(key)
            if isinstance(user, User) and inspect(user).key == key:  # not a stale entry
                loaded.add(key[1][0])
        changed = builtins.list(loaded.intersection(names))
        if changed:
            self._ledger.touched.update(changed)  # a rollback must not keep these values
            with self._session.no_autoflush:
                self._session.scalars(
                    _LOADED_AMONG, {"names": changed}, execution_options=_FRESH
                ).all()

    def _refreshing(self) -> bool:
        """Whether a read may refresh the users this session holds.

        Yes when it holds none, or when the read's own autoflush writes every
        staged change first; not when a change would stay unflushed
        (autoflush off), since the refresh would undo it.
        """
        session = self._session
        return bool(len(session.identity_map)) and (session.autoflush or not session.dirty)

    @observed("commit")
    def commit(self) -> None:
        """Write the unit of work atomically and start a new one.

        Users stay readable after the commit (and after the session closes)
        with the values just written.

        Raises:
            DuplicateUserError: a staged user's name is taken; nothing of the
                unit of work was written.
            TransientDatabaseError: a failure worth retrying the unit of work
                for, including a user changed here that another unit of work
                deleted or renamed meanwhile.
            DatabaseError: any other database failure; nothing was written.
        """
        self._send(self._session.commit)

    def read_token(self) -> str:
        """Return a token naming everything committed so far, for reads elsewhere to wait for.

        Give it to another process or request (a cookie, a header) and open
        its session with ``factory(read_after=token)``: reads there, even on a
        replica, see at least what was committed here before the call. The
        token is the database's own position (``postgresql:0/3000148``, a
        WAL LSN; ``mariadb:7-1-42``, a GTID list; ``sqlite:``, always met).

        Raises:
            DatabaseError: the primary could not be asked for its position.
        """
        return self._send(token_from, self._session)

    @observed("rollback")
    def rollback(self) -> None:
        """Discard the unit of work.

        Staged users are dropped. Loaded users this unit of work wrote are
        expired (their values may be untrue now) and reload on next read;
        the others keep the values they were read with.
        """
        self._discard_unit_of_work()

    def _flushed(self, operation: Callable[_P, _T]) -> Callable[_P, _T]:
        """``operation``, preceded by the autoflush that SQLAlchemy 2.0 skips for
        Core statements such as EXISTS and COUNT (a no-op on a clean session)."""

        def flushed(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            if self._session.autoflush:
                self._session.flush()
            return operation(*args, **kwargs)

        return flushed

    def _send(self, operation: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a session operation, translating a database failure into our errors."""
        transaction = self._session.get_transaction()
        if transaction is not None and not transaction.is_active:
            # An earlier failure outside this repository (an interrupted call,
            # the app's own flush or commit) left the unit of work dead.
            self._discard_unit_of_work()
        try:
            if self._ledger.bulk:
                self._check_pending_names()
            return operation(*args, **kwargs)
        except _FAILURES as exc:
            interruption = _interruption_behind(exc)
            if interruption is not None:  # Ctrl-C, a timeout, a cancellation: never ours to hide
                self._discard_unit_of_work()
                raise interruption from None
            raise self._failure(exc) from exc
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._discard_after_interruption()
            raise

    def _discard_after_interruption(self) -> None:
        """Roll the unit of work back after a KeyboardInterrupt or a cancellation inside it.

        Whatever the interrupted call had sent (part of a bulk write, say)
        must not reach the next commit. Best effort: the interruption is
        raised whatever happens here.
        """
        with contextlib.suppress(BaseException):  # a second interruption, a dead connection
            self._discard_unit_of_work()

    def _check_pending_names(self) -> None:
        """Before flushing after a bulk write, look the pending names up in this transaction.

        The ledger does not keep bulk-written names (they would grow with the
        input), and a rollback erases them, so a duplicate of one is found
        while the transaction still shows it (see :mod:`userstore.duplicates`).
        """
        session = self._session
        names = duplicates.pending_names(session)
        if not names:
            return
        with session.no_autoflush:
            taken = duplicates.first_stored(session, names)
        if taken is not None:
            self._discard_unit_of_work()
            raise DuplicateUserError(taken)

    def _is_duplicate(self, exc: BaseException) -> bool:
        if isinstance(exc, DatabaseError):
            return is_unique_violation(exc)
        if isinstance(exc, sa_exc.SQLAlchemyError):
            return classify(exc, self._dialect_name()) is DuplicateUserError
        return False

    def _dialect_name(self) -> str:
        return self._session.get_bind(User).dialect.name

    def _observed_unit(self) -> object:
        return self._session

    def _observed_backend(self) -> str:
        try:
            return backend_of(self._dialect_name())
        except sa_exc.SQLAlchemyError:  # a session with no bind: add() still works
            return "unknown"

    def _failure(self, exc: BaseException) -> UserStoreError:
        """Roll the unit of work back and return the error to raise for ``exc``."""
        book = self._ledger
        candidates = book.candidates()
        written, deleted = frozenset(book.written), frozenset(book.deleted)
        duplicate = self._is_duplicate(exc)
        self._discard_unit_of_work()
        if duplicate:
            try:
                name = duplicates.name_from_history(self._session, candidates, written, deleted)
            except _FAILURES:
                name = candidates[0] if candidates else "<unknown>"  # the staged names still tell
            finally:
                self._discard_unit_of_work()
            return DuplicateUserError(name)
        return _rolled_back(exc, self._dialect_name())

    def _discard_unit_of_work(self) -> None:
        """Roll back; users stay readable (the ledger's rollback hook sees to it)."""
        session = self._session
        loaded = duplicates.loaded_users(session) if len(session.identity_map) else ([], [])
        try:
            session.rollback()
        except _FAILURES:
            # The connection died under the rollback, before the hook could
            # run: closing releases it and leaves the session ready to begin
            # afresh; the users' values are kept here instead.
            session.close()
            duplicates.keep_readable(session, *loaded)


def _check_bound(session: Session) -> None:
    """Refuse a plain ``Session`` that can reach no database, before any call needs one.

    Every call would fail on it (SQLAlchemy's ``UnboundExecutionError``);
    saying so once, here, is clearer. A session class that finds its own bind
    (a routing session, an app's ``get_bind``) is trusted to.
    """
    if session.bind is not None or type(session).get_bind is not Session.get_bind:
        return
    try:
        session.get_bind(mapper=inspect(User))
    except sa_exc.UnboundExecutionError:
        raise ConfigurationError(
            "the session is bound to no engine: make sessions with "
            "userstore.create_session_factory(engine) or, for async, "
            "userstore.create_async_session_factory(engine)"
        ) from None


def keyset_pages(list_page: Callable[..., builtins.list[User]], batch_size: int) -> Iterator[User]:
    """Every user, one keyset page (one ``list_page(after=, limit=)`` call) at a time.

    The page in hand is the only one held; the loop ends on a short page.
    """
    after = None
    while True:
        page = list_page(after=after, limit=batch_size)
        yield from page
        if len(page) < batch_size:
            return
        after = page[-1].name
        del page


def _interruption_behind(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt (or other non-Exception) that SQLAlchemy's cleanup replaced, if any."""
    seen: BaseException | None = exc.__context__
    for _ in range(10):  # a short chain; never loop on a cycle
        if seen is None:
            return None
        if not isinstance(seen, Exception):
            return seen
        seen = seen.__context__
    return None


def _rolled_back(exc: BaseException, dialect_name: str) -> DatabaseError:
    """The error a repository call raises for ``exc`` once the unit of work is rolled back."""
    suffix = "; the unit of work was rolled back"
    if isinstance(exc, DatabaseError):
        return type(exc)(f"{exc}{suffix}", code=exc.code, backend=exc.backend)
    if isinstance(exc, sa_exc.PendingRollbackError):
        return TransientDatabaseError(
            "the unit of work's connection was lost or invalidated earlier "
            f"({' '.join(str(exc).split())}){suffix}"
        )
    if isinstance(exc, _CONFLICTS):
        return TransientDatabaseError(
            "a user this unit of work changes was deleted or renamed by another unit of work "
            f"since it was loaded ({exc}){suffix}"
        )
    error_class = classify(exc, dialect_name) if isinstance(exc, sa_exc.SQLAlchemyError) else None
    if error_class is None or not issubclass(error_class, DatabaseError):
        error_class = DatabaseError
    return error_class(f"{type(exc).__name__}: {exc}{suffix}")
