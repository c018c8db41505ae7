"""``UserRepository``: the verbs an app uses to store and find users."""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Final, ParamSpec, TypeVar

from sqlalchemy import Integer, bindparam, event, exists, func, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from userstore.bulk import (
    DEFAULT_BATCH_SIZE,
    Batch,
    Row,
    UpsertResult,
    insert_batch,
    last_of_each_name,
    upsert_batch,
    validated_batches,
)
from userstore.db_errors import classify
from userstore.errors import (
    DuplicateUserError,
    InvalidUserError,
    UserNotFoundError,
    UserStoreError,
)
from userstore.models import User
from userstore.validation import validate_limit, validate_name, validate_number

# Statements are built once: building a select() per call costs more than
# the rest of a repository call. Values travel as bound parameters.
_EXISTS: Final = select(exists().where(User.name == bindparam("name")))
_COUNT: Final = select(func.count()).select_from(User)
_PAGE: Final = select(User).order_by(User.name)
_PAGE_AFTER: Final = _PAGE.where(User.name > bindparam("after"))
_LIMIT: Final = bindparam("limit", type_=Integer)
_LIST_STATEMENTS: Final = {
    (False, False): _PAGE,
    (True, False): _PAGE_AFTER,
    (False, True): _PAGE.limit(_LIMIT),
    (True, True): _PAGE_AFTER.limit(_LIMIT),
}
_NAMES_PRESENT: Final = select(User.name).where(User.name.in_(bindparam("names", expanding=True)))
_NAME_LOOKUP_CHUNK: Final = 500
_P = ParamSpec("_P")
_T = TypeVar("_T")


class UserRepository:
    """Stores and finds users through one SQLAlchemy session (one unit of work).

    ``add`` and ``delete`` stage changes; ``commit`` writes the unit of work
    atomically; reads autoflush staged changes first, so they see them. When the
    database rejects a unit of work, whichever call sent it raises a
    :class:`~userstore.errors.UserStoreError`, the whole unit of work is rolled
    back, and the repository is ready for the next call.

    Args:
        session: The session to work on, usually from
            :func:`~userstore.create_session_factory`. The caller owns it and
            closes it.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        # To name the user behind a duplicate after the rollback has erased
        # the evidence, note what each flush sends and what this transaction
        # has already written (a rollback takes those rows back too).
        self._flushing_names: builtins.list[str] = []
        self._written_names: set[str] = set()
        self._deleted_names: set[str] = set()
        # (The failing flush's own rollback clears both sets before we get to
        # look, so each flush starts by keeping a copy.)
        self._written_before_flush: frozenset[str] = frozenset()
        self._deleted_before_flush: frozenset[str] = frozenset()
        event.listen(session, "before_flush", self._note_flushing_names)
        event.listen(session, "after_flush", self._note_written_names)
        event.listen(session, "after_commit", self._forget_written_names)
        event.listen(session, "after_soft_rollback", self._forget_written_names)

    @property
    def session(self) -> Session:
        """The session this repository works on."""
        return self._session

    def add(self, user: User) -> User:
        """Stage a new user; it is written by the next flush or commit.

        Args:
            user: A ``User`` built with a valid name and number.

        Returns:
            The same object, now pending in the session.

        Raises:
            InvalidUserError: ``user`` is not a ``User`` or its fields are invalid.
            DuplicateUserError: this session holds another ``User`` of this
                name and the database confirms it is stored; the unit of work
                was rolled back.
        """
        if not isinstance(user, User):
            raise InvalidUserError(f"add() takes a User, got {type(user).__name__}")
        name = user.name
        if name is None:
            raise InvalidUserError("name is required, got None")
        validate_name(name)
        validate_number(user.number)
        existing = self._session.identity_map.get(Session.identity_key(User, (name,)))
        if existing is not None and existing is not user and not inspect(existing).deleted:
            self._resolve_identity_conflict(existing, name)
        self._session.add(user)
        return user

    def _resolve_identity_conflict(self, existing: User, name: str) -> None:
        """Handle an add() whose name belongs to a user this session has loaded.

        SQLAlchemy would warn and then send an INSERT bound to fail, so the
        database is asked directly: if the user is stored, this is a
        duplicate; if another transaction deleted it, the stale object goes.
        """
        if self.exists(name):
            self._discard_unit_of_work()
            raise DuplicateUserError(name)
        self._session.expunge(existing)

    def get(self, name: str) -> User | None:
        """Return the user called ``name``, or ``None``.

        Staged changes are flushed first. A user already loaded in this
        session is returned as the very same object.

        Raises:
            InvalidUserError: ``name`` is not a valid name.
            DuplicateUserError: the autoflush of staged users hit a taken name.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        validate_name(name)
        return self._send(self._session.get, User, name)

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

    def exists(self, name: str) -> bool:
        """Return whether a user called ``name`` exists (an EXISTS query).

        Raises:
            InvalidUserError: ``name`` is not a valid name.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        validate_name(name)
        return bool(self._send(self._session.scalar, _EXISTS, {"name": name}))

    def count(self) -> int:
        """Return the number of users, staged ones included.

        Raises:
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        return int(self._send(self._session.scalar, _COUNT) or 0)

    def delete(self, name: str) -> None:
        """Delete the user called ``name`` within the current unit of work.

        Raises:
            UserNotFoundError: no such user.
            InvalidUserError: ``name`` is not a valid name.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        user = self.get_one(name)
        self._session.delete(user)
        self._send(self._session.flush)

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
        return self._send(lambda: builtins.list(self._session.scalars(statement, parameters)))

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
            InvalidUserError: a row is invalid (the message names its position);
                the unit of work was rolled back if anything had been sent.
            DuplicateUserError: a name is taken or repeats in the input; the
                unit of work was rolled back, so nothing of this call is written.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        inserted = 0

        def insert(batch: Batch) -> None:
            nonlocal inserted
            self._insert_batch(batch)
            inserted += len(batch)

        self._write_in_batches(users, batch_size, insert)
        return inserted

    def _insert_batch(self, batch: Batch) -> None:
        # A savepoint per batch keeps the transaction alive after a conflict,
        # so the offending name can still be looked up before rolling back.
        try:
            with self._session.begin_nested():
                insert_batch(self._session.connection(), batch)
        except sa_exc.SQLAlchemyError as exc:
            if classify(exc, self._session.get_bind().dialect.name) is not DuplicateUserError:
                raise self._failure(exc) from exc
            names = [name for name, _ in batch]
            raise DuplicateUserError(
                self._find_duplicate(
                    names, written_earlier=frozenset(), deleted_earlier=frozenset()
                )
            ) from exc

    def _write_in_batches(
        self, rows: Iterable[Row], batch_size: int, write: Callable[[Batch], None]
    ) -> None:
        """Validate rows batch by batch and write each; any bad row undoes the whole call.

        A sequence is validated whole before any SQL; other iterables a batch
        at a time, so memory stays flat. Staged changes are flushed first, so
        they keep their place ahead of the bulk rows.
        """
        batches = validated_batches(rows, batch_size)
        if isinstance(rows, Sequence):
            batches = iter(builtins.list(batches))
        self._send(self._session.flush)
        try:
            for batch in batches:
                write(batch)
                self._expire_loaded(name for name, _ in batch)
        except InvalidUserError:
            self._discard_unit_of_work()
            raise

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
            result = self._send(upsert_batch, self._session.connection(), last_of_each_name(batch))
            totals = UpsertResult(
                totals.inserted + result.inserted,
                totals.updated + result.updated,
                totals.unchanged + result.unchanged,
            )

        self._write_in_batches(rows, batch_size, upsert)
        return totals

    def iter_all(self, *, batch_size: int = 1000) -> Iterator[User]:
        """Yield every user in name order, holding only one batch in memory.

        Rows stream through a server-side cursor on PostgreSQL and MariaDB (on
        MariaDB the connection is busy until the iteration ends). Users the
        caller does not keep are freed as it goes.

        Raises:
            InvalidUserError: ``batch_size`` is not a positive int.
            DatabaseError: the database failed; the unit of work was rolled back.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidUserError(f"batch_size must be a positive int, got {batch_size!r}")
        result = self._send(
            self._session.scalars, _PAGE, execution_options={"yield_per": batch_size}
        )
        try:
            yield from result
        except sa_exc.SQLAlchemyError as exc:
            raise self._failure(exc) from exc
        finally:
            result.close()

    def _expire_loaded(self, names: Iterable[str]) -> None:
        """Make users loaded before a bulk write reload on next access."""
        identity_map = self._session.identity_map
        if not len(identity_map):
            return
        written = set(names)
        for user in builtins.list(identity_map.values()):
            if isinstance(user, User) and user.name in written:
                self._session.expire(user)

    def commit(self) -> None:
        """Write the unit of work atomically and start a new one.

        Raises:
            DuplicateUserError: a staged user's name is taken; nothing of the
                unit of work was written.
            TransientDatabaseError: a failure worth retrying the unit of work for.
            DatabaseError: any other database failure; nothing was written.
        """
        self._send(self._session.commit)

    def rollback(self) -> None:
        """Discard the unit of work: staged users are dropped, loaded ones expired."""
        self._session.rollback()

    def _send(self, operation: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a session operation, translating a database failure into our errors."""
        try:
            return operation(*args, **kwargs)
        except sa_exc.SQLAlchemyError as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: sa_exc.SQLAlchemyError) -> UserStoreError:
        """Roll the unit of work back and return the error to raise for ``exc``."""
        error_class = classify(exc, self._session.get_bind().dialect.name)
        candidates = self._unwritten_names() if error_class is DuplicateUserError else []
        written_earlier, self._written_before_flush = self._written_before_flush, frozenset()
        deleted_earlier, self._deleted_before_flush = self._deleted_before_flush, frozenset()
        self._discard_unit_of_work()
        if error_class is DuplicateUserError:
            return DuplicateUserError(
                self._find_duplicate(candidates, written_earlier, deleted_earlier)
            )
        orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
        return error_class(f"{type(orig).__name__}: {orig}; the unit of work was rolled back")

    def _discard_unit_of_work(self) -> None:
        try:
            self._session.rollback()
        except sa_exc.SQLAlchemyError:
            # The connection died under the rollback; closing releases it and
            # leaves the session ready to begin afresh.
            self._session.close()

    def _note_flushing_names(self, session: Session, *_: object) -> None:
        self._written_before_flush = frozenset(self._written_names)
        self._deleted_before_flush = frozenset(self._deleted_names)
        self._flushing_names = [obj.name for obj in session.new if isinstance(obj, User)]
        self._flushing_names.extend(
            obj.name
            for obj in session.dirty
            if isinstance(obj, User) and inspect(obj).attrs.name.history.has_changes()
        )

    def _note_written_names(self, session: Session, *_: object) -> None:
        # after_flush still sees the flushed objects as new / deleted.
        deleted = {obj.name for obj in session.deleted if isinstance(obj, User)}
        self._written_names.difference_update(deleted)
        self._written_names.update(self._flushing_names)
        self._deleted_names.difference_update(self._flushing_names)
        self._deleted_names.update(deleted)
        self._flushing_names = []

    def _forget_written_names(self, *_: object) -> None:
        self._written_names = set()
        self._deleted_names = set()

    def _unwritten_names(self) -> builtins.list[str]:
        names, self._flushing_names = self._flushing_names, []
        return names

    def _find_duplicate(
        self,
        candidates: builtins.list[str],
        written_earlier: frozenset[str],
        deleted_earlier: frozenset[str],
    ) -> str:
        """Name the user that made a write fail: staged twice, written earlier, or stored.

        Run after the rollback, which has undone this transaction's writes:
        its inserts are gone from the table and its deletes are back, so both
        are known from the flush history rather than looked up.
        """
        repeated = [name for name, seen in Counter(candidates).items() if seen > 1]
        if repeated:
            return repeated[0]
        earlier = [name for name in candidates if name in written_earlier]
        if earlier:
            return earlier[0]
        try:
            stored = self._first_stored([n for n in candidates if n not in deleted_earlier])
        except sa_exc.SQLAlchemyError:
            stored = None  # best effort: the staged names below still tell
        finally:
            self._discard_unit_of_work()
        return stored if stored is not None else (candidates or ["<unknown>"])[0]

    def _first_stored(self, candidates: builtins.list[str]) -> str | None:
        iterator = iter(dict.fromkeys(candidates))
        while chunk := builtins.list(islice(iterator, _NAME_LOOKUP_CHUNK)):
            stored = self._session.scalars(_NAMES_PRESENT, {"names": chunk}).first()
            if stored is not None:
                return stored
        return None
