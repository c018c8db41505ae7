"""An in-memory fake of :class:`~userstore.UserRepository`, for an app's fast tests.

:class:`InMemoryUserStore` plays the database: committed users, shared by every
unit of work opened on it, behind one lock. :class:`InMemorySession` plays a
session: one unit of work with its staged users, its own uncommitted writes
(which other units of work never see: read committed) and an identity map that,
like SQLAlchemy's, holds loaded users weakly. :class:`InMemoryUserRepository`
has the real repository's verbs over it, with the same validation (the very
functions of :mod:`userstore.validation` and :mod:`userstore.bulk`), errors,
ordering, keyset paging, timestamps and unit-of-work rules. It passes the
project's contract suite (``tests/``), which is what earns it trust.

Users are the real :class:`~userstore.User` model, never attached to a
SQLAlchemy session. An assignment to a loaded user's ``name``, ``number`` or
stamps is noticed (through SQLAlchemy's attribute events) and written by the
next flush or commit, as the ORM would.
"""

from __future__ import annotations

import builtins
import contextlib
import heapq
import threading
import weakref
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, TypeAlias

from sqlalchemy import event
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from userstore.bulk import (
    DEFAULT_BATCH_SIZE,
    Batch,
    Row,
    UpsertResult,
    check_batch_size,
    last_of_each_name,
    validated_batches,
)
from userstore.duplicates import _LOOKUP_CHUNK
from userstore.errors import (
    DatabaseError,
    DuplicateUserError,
    InvalidUserError,
    TransientDatabaseError,
    UserNotFoundError,
)
from userstore.models import User
from userstore.observability.calls import observed, outside_the_call
from userstore.repository import _rolled_back, keyset_pages
from userstore.validation import validate_limit, validate_name

if TYPE_CHECKING:
    from userstore.testing.fake_async import AsyncInMemoryUserRepository

# number, created_at, updated_at: a stored row, keyed by name.
_Stored: TypeAlias = tuple[int | None, datetime, datetime]
# name, number, created_at, updated_at: what a unit of work last read or wrote for a user.
_Snapshot: TypeAlias = tuple[str, int | None, datetime | None, datetime | None]
_Requires: TypeAlias = Literal["absent", "present", "any"]
_ONE_MICROSECOND: Final = timedelta(microseconds=1)
_REQUIRES: Final[dict[str, _Requires]] = {
    "INSERT": "absent",
    "UPDATE": "present",
    "DELETE": "present",
    "UPSERT": "any",
}
_FEW: Final = 64  # writes a commit files into the sorted names one at a time
_STALE: Final = (
    "a user this unit of work changes was deleted or renamed by another unit of work "
    "since it was loaded ({detail}); the unit of work was rolled back"
)
# What SQLAlchemy says when a flushed UPDATE finds the row gone (the real message quotes it).
_UPDATE_MATCHED_NOTHING: Final = (
    "UPDATE statement on table 'users' expected to update 1 row(s); 0 were matched."
)


class StoredUser(NamedTuple):
    """A committed user, as :meth:`InMemoryUserStore.rows` returns it."""

    name: str
    number: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class _Write:
    """One name's uncommitted write: its new row (``None``: deleted), and what commit needs.

    ``requires`` is what the committed state held when this unit of work first
    wrote the name ("absent" for an insert, "present" for an update or delete,
    "any" for an upsert): a commit that finds otherwise lost a race. ``base``
    is the committed row this unit of work saw then (``None``: none): an upsert
    whose base is still the committed row at commit is stored as written.
    """

    row: _Stored | None
    requires: _Requires
    base: _Stored | None = None


class InMemoryUserStore:
    """Committed users shared by every repository opened on it, like one database.

    Thread-safe: units of work in several threads read and commit under one
    lock, and each sees the others' work only once it is committed.

    Example:
        >>> store = InMemoryUserStore()
        >>> repo = store.repository()
        >>> _ = repo.add(User(name="Jenny", number=8675309))
        >>> repo.commit()
        >>> store.repository().get_one("Jenny").number
        8675309
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._rows: dict[str, _Stored] = {}
        self._names: list[str] = []  # the committed names, in code-point order
        self._clock = datetime.min.replace(tzinfo=UTC)
        self._listeners: list[Callable[[str], None]] = []
        # Reads and writes so far: the async fake yields to the event loop after
        # a call that made any, as a database call awaits the driver.
        self._accesses = 0

    def repository(self) -> InMemoryUserRepository:
        """A repository on a unit of work of its own, as a session from a factory would be."""
        return InMemoryUserRepository(self)

    def async_repository(self) -> AsyncInMemoryUserRepository:
        """An async repository on a unit of work of its own."""
        from userstore.testing.fake_async import AsyncInMemoryUserRepository

        return AsyncInMemoryUserRepository(self)

    def session(self) -> InMemorySession:
        """A new unit of work on this store; several repositories may share it."""
        return InMemorySession(self)

    def rows(self) -> builtins.list[StoredUser]:
        """Every committed user, in name order (what a plain ``SELECT`` would show)."""
        with self._lock:
            return [StoredUser(name, *self._rows[name]) for name in self._names]

    def clear(self) -> None:
        """Delete every committed user (``DELETE FROM users``)."""
        with self._lock:
            self._rows.clear()
            self._names.clear()

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with a short description of each read or write of the store.

        The fake's counterpart of SQL statements, for tests that check a call
        touched nothing (say, that bad input was refused before any access).
        """
        self._listeners.append(listener)

    def unlisten(self, listener: Callable[[str], None]) -> None:
        """Stop calling a listener given to :meth:`listen`."""
        self._listeners.remove(listener)

    # -- for the units of work ------------------------------------------------

    def _note(self, access: str) -> None:
        self._accesses += 1
        for listener in self._listeners:
            listener(access)

    def _now(self) -> datetime:
        """The time of a statement: aware UTC, microseconds, never the same twice."""
        with self._lock:
            now = datetime.now(UTC)
            self._clock = now if now > self._clock else self._clock + _ONE_MICROSECOND
            return self._clock

    def _publish(self, writes: dict[str, _Write]) -> None:
        """Apply a unit of work's writes atomically, or raise without applying any."""
        with self._lock:
            rows = self._rows
            for name, write in writes.items():
                present = name in rows
                if write.row is None:
                    continue
                if write.requires == "absent" and present:
                    raise DuplicateUserError(name)
                if write.requires == "present" and not present:
                    raise TransientDatabaseError(_STALE.format(detail=repr(name)))
            self._note("COMMIT")
            # A few names are put in place one by one; many (a bulk write) in one sort.
            one_by_one = len(writes) <= _FEW
            for name, write in writes.items():
                row = write.row
                if row is None:
                    if rows.pop(name, None) is not None and one_by_one:
                        del self._names[bisect_left(self._names, name)]
                    continue
                current = rows.get(name)
                if current is None:
                    if one_by_one:
                        insort(self._names, name)
                elif write.requires == "any" and current is not write.base:
                    # An upsert meets a row another unit of work committed meanwhile:
                    # it updates that row, as the native statement would have once
                    # that unit's lock was released (so, now). (Else it stores what
                    # its statement returned, stamp included.)
                    number = row[0]
                    row = (number, current[1], self._now() if number != current[0] else current[2])
                rows[name] = row
            if not one_by_one:
                self._names = sorted(rows)


# Which unit of work each user belongs to (weakly: users outlive units of work).
_OWNERS: Final[weakref.WeakKeyDictionary[User, weakref.ref[InMemorySession]]] = (
    weakref.WeakKeyDictionary()
)
_OWNERS_LOCK: Final = threading.Lock()


def _owner(user: User) -> InMemorySession | None:
    reference = _OWNERS.get(user)
    return None if reference is None else reference()


# Users whose deletion a unit of work wrote (flushed, or committed): SQLAlchemy's
# ``was_deleted``. An assignment to one is never written; adding one is refused.
_DELETED: Final[weakref.WeakSet[User]] = weakref.WeakSet()


def _noticed_assignment(target: User, _value: object, _old: object, _initiator: object) -> None:
    """Mark a user as changed in the unit of work that holds it, like the ORM's dirty set."""
    session = _owner(target)
    if session is not None and target in session._snapshots and target not in _DELETED:
        session._dirty.add(target)


for _attribute in (User.name, User.number, User.created_at, User.updated_at):
    if not event.contains(_attribute, "set", _noticed_assignment):
        event.listen(_attribute, "set", _noticed_assignment)


class InMemorySession:
    """One unit of work on an :class:`InMemoryUserStore`: what a ``Session`` is to a database.

    Staged users wait for a flush (a read's autoflush, or the commit); flushed
    writes stay this unit's own until :meth:`commit` publishes them all at
    once. The same controls as a SQLAlchemy session, where a test or an app
    needs them: :meth:`flush`, :meth:`commit`, :meth:`rollback`,
    :meth:`close`, :meth:`begin`, :meth:`begin_nested`, :meth:`expunge_all`,
    :meth:`expire_all`, :attr:`no_autoflush`, :attr:`new`. Not thread-safe,
    like a session: give each thread (each request) its own.

    Args:
        store: The store this unit of work reads and commits to.
    """

    def __init__(self, store: InMemoryUserStore) -> None:
        if not isinstance(store, InMemoryUserStore):
            raise InvalidUserError(
                f"InMemorySession takes an InMemoryUserStore, got {type(store).__name__}"
            )
        self._store = store
        self.autoflush = True
        self._in_use = False  # an async repository's call is running (one task at a time)
        # What the real repository's ledger (userstore.duplicates) keeps, to name a
        # duplicate the same way: names this unit's flushes wrote and deleted, and
        # whether it made a bulk write.
        self._flushed_names: set[str] = set()
        self._deleted_names: set[str] = set()
        self._bulk = False
        self._writes: dict[str, _Write] = {}
        self._own_names: builtins.list[str] | None = None  # sorted names this unit wrote a row for
        self._new: builtins.list[User] = []
        self._dirty: set[User] = set()
        self._deleted: builtins.list[User] = []
        self._inserted: weakref.WeakSet[User] = weakref.WeakSet()  # flushed here, not committed
        # Loaded users by name (weakly, as SQLAlchemy's identity map holds them),
        # with the values this unit last read or wrote for each.
        self._identity: weakref.WeakValueDictionary[str, User] = weakref.WeakValueDictionary()
        self._snapshots: weakref.WeakKeyDictionary[User, _Snapshot] = weakref.WeakKeyDictionary()
        # Users this unit of work wrote, with the name each had before: a
        # rollback gives them their stored values back.
        self._written: weakref.WeakKeyDictionary[User, str] = weakref.WeakKeyDictionary()

    @property
    def store(self) -> InMemoryUserStore:
        """The store this unit of work works on."""
        return self._store

    @property
    def new(self) -> tuple[User, ...]:
        """The users staged by ``add`` and not flushed yet."""
        return tuple(self._new)

    @property
    def no_autoflush(self) -> contextlib.AbstractContextManager[None]:
        """A block in which reads do not flush staged changes first."""
        return self._without_autoflush()

    @contextlib.contextmanager
    def _without_autoflush(self) -> Iterator[None]:
        previous, self.autoflush = self.autoflush, False
        try:
            yield
        finally:
            self.autoflush = previous

    def in_transaction(self) -> bool:
        """Whether this unit of work holds anything staged or written."""
        return bool(self._writes or self._new or self._dirty or self._deleted)

    def flush(self) -> None:
        """Write staged users and assignments into this unit of work (not yet committed).

        Raises:
            DuplicateUserError: a staged name is taken; the unit of work was
                rolled back.
            TransientDatabaseError: a changed user was deleted or renamed by
                another unit of work; the unit of work was rolled back.
        """
        if not (self._new or self._dirty):
            return
        try:
            self._flush()
        except (DuplicateUserError, TransientDatabaseError):
            self._discard()
            raise

    def commit(self) -> None:
        """Flush, then publish this unit of work's writes to the store atomically.

        Raises:
            DuplicateUserError: a staged name is taken, or was committed by
                another unit of work meanwhile; nothing was written.
            TransientDatabaseError: a user changed here was deleted or renamed
                by another unit of work; nothing was written.
        """
        self.flush()
        try:
            if self._writes:
                self._store._publish(self._writes)
        except (DuplicateUserError, TransientDatabaseError):
            self._discard()
            raise
        self._writes = {}
        self._own_names = None
        self._forget_history()
        self._written = weakref.WeakKeyDictionary()
        self._inserted = weakref.WeakSet()
        for user in self._deleted:
            self._release(user)
        self._deleted = []

    def rollback(self) -> None:
        """Discard the unit of work; users it wrote show their stored values again."""
        self._discard()

    def close(self) -> None:
        """Roll back and let go of every user; the session can be used again."""
        self._discard()
        self.expunge_all()

    def reset(self) -> None:
        """The same as :meth:`close`."""
        self.close()

    def expunge_all(self) -> None:
        """Forget every loaded and staged user (flushed writes stay in the unit of work)."""
        for user in [*self._identity.values(), *self._new, *self._deleted]:
            self._release(user)
        self._identity = weakref.WeakValueDictionary()
        self._snapshots = weakref.WeakKeyDictionary()
        self._written = weakref.WeakKeyDictionary()
        self._inserted = weakref.WeakSet()
        self._new, self._dirty, self._deleted = [], set(), []

    def expire_all(self) -> None:
        """Drop unflushed assignments: loaded users take their values from the store again."""
        self._dirty.clear()
        for name, user in builtins.list(self._identity.items()):
            row = self._visible(name)
            if row is not None:
                self._load(user, name, row)

    def begin(self) -> contextlib.AbstractContextManager[InMemorySession]:
        """A block that commits on success and rolls back when it raises."""
        return self._unit_of_work_block()

    @contextlib.contextmanager
    def _unit_of_work_block(self) -> Iterator[InMemorySession]:
        try:
            yield self
        except BaseException:
            self._discard()
            raise
        self.commit()

    def begin_nested(self) -> InMemorySavepoint:
        """Flush, then open a savepoint: its rollback undoes only what came after it."""
        self.flush()
        return InMemorySavepoint(self)

    def __enter__(self) -> InMemorySession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the unit of work's machinery -------------------------------------------

    def _visible(self, name: str) -> _Stored | None:
        """The row this unit of work sees for ``name``: its own write, else the committed one."""
        write = self._writes.get(name)
        return self._store._rows.get(name) if write is None else write.row

    def _write(self, name: str, row: _Stored | None, verb: str) -> None:
        """Record this unit of work's write of ``name``: INSERT, UPDATE, DELETE or UPSERT.

        The first write of a name also records what the commit needs the
        committed state to hold, from what this unit of work saw: no row for an
        insert, a row for an update or delete, anything for an upsert. (Asking
        the store now instead would race another unit's commit.)
        """
        previous = self._writes.get(name)
        if previous is None:
            self._writes[name] = _Write(row, _REQUIRES[verb], self._store._rows.get(name))
        else:
            self._writes[name] = _Write(row, previous.requires, previous.base)
        self._own_names = None
        self._store._note(f"{verb} {name!r}")

    def _own(self, user: User) -> None:
        with _OWNERS_LOCK:
            _OWNERS[user] = weakref.ref(self)

    def _release(self, user: User) -> None:
        with _OWNERS_LOCK:
            if _owner(user) is self:
                del _OWNERS[user]

    def _load(self, user: User, name: str, row: _Stored) -> None:
        """Give a user the values of ``row``, as this unit of work sees it now."""
        number, created_at, updated_at = row
        _set_values(user, (name, number, created_at, updated_at))
        self._dirty.discard(user)
        self._identity[name] = user
        self._snapshots[user] = (name, number, created_at, updated_at)

    def _loaded(self, name: str, row: _Stored, *, refresh: bool) -> User:
        """The user this unit of work holds for ``name`` (refreshed), or a new one."""
        user = self._identity.get(name)
        if user is None:
            user = User()
            self._own(user)
            self._load(user, name, row)
        elif refresh:
            self._load(user, name, row)
        return user

    def _refreshing(self) -> bool:
        """Whether reads may refresh loaded users: never over an unflushed change."""
        return bool(self._identity) and (self.autoflush or not self._dirty)

    def _touch(self, user: User, name: str) -> None:
        """Record that this unit of work writes ``user``, stored under ``name`` before."""
        self._written.setdefault(user, name)

    def _flush(self) -> None:
        changed = [user for user in self._dirty if user in self._snapshots]
        # The names this flush sends, as the real ledger lists them: new users, then renamed.
        sent = [user.name for user in self._new]
        sent += [user.name for user in changed if user.name != self._snapshots[user][0]]
        if self._bulk and sent:
            # After a bulk write the real repository looks the names up first, in the
            # unit of work, and names the first found (the least, in index order).
            taken = self._first_taken(sent, self._visible)
            if taken is not None:
                raise DuplicateUserError(taken)
        try:
            self._flush_all(changed)
        except DuplicateUserError:
            raise DuplicateUserError(self._duplicate_after_rollback(sent)) from None
        self._flushed_names.update(sent)
        self._deleted_names.difference_update(sent)

    def _flush_all(self, changed: builtins.list[User]) -> None:
        stamp = self._store._now()
        # Updates go first, in name order, then inserts in the order they were
        # added, as SQLAlchemy's flush sends them: a rename frees its old name.
        changed.sort(key=lambda user: self._snapshots[user][0])
        for user in changed:  # (a failure leaves the rest dirty: the rollback restores them)
            self._flush_update(user, stamp)
            self._dirty.discard(user)
        self._dirty.clear()
        staged, self._new = self._new, []
        for position, user in enumerate(staged):
            name = user.name
            if self._visible(name) is not None:
                self._new = staged[position:]
                raise DuplicateUserError(name)
            created_at = user.created_at or stamp
            row = (user.number, created_at, user.updated_at or stamp)
            self._write(name, row, "INSERT")
            self._load(user, name, row)
            self._inserted.add(user)

    def _flush_update(self, user: User, stamp: datetime) -> None:
        before = self._snapshots[user]
        old_name = before[0]
        now = (user.name, user.number, user.created_at, user.updated_at)
        if now == before:
            return  # assigned the value it had: no UPDATE
        if self._visible(old_name) is None:
            raise TransientDatabaseError(_STALE.format(detail=_UPDATE_MATCHED_NOTHING))
        name, number, created_at, updated_at = now
        if name != old_name and self._visible(name) is not None:
            raise DuplicateUserError(name)
        if updated_at == before[3] or updated_at is None:
            updated_at = stamp  # the ORM's onupdate, unless the app set it
        assert created_at is not None  # a loaded user always has its stamps
        self._touch(user, old_name)
        if name != old_name:
            self._write(old_name, None, "DELETE")
            if self._identity.get(old_name) is user:
                del self._identity[old_name]
        row = (number, created_at, updated_at)
        self._write(name, row, "UPDATE" if name == old_name else "INSERT")
        self._load(user, name, row)

    def _discard(self) -> None:
        """Roll the unit of work back; users stay readable (see the module docstring)."""
        committed = self._store._rows
        inserted = set(self._inserted)
        written = [(user, name) for user, name in self._written.items() if user not in inserted]
        changed = [
            (user, self._snapshots[user][0])
            for user in self._dirty
            if user in self._snapshots and user not in inserted and user not in self._written
        ]
        for user in [*self._new, *inserted]:
            # Users this unit of work inserted are new again, as after a session's rollback.
            snapshot = self._snapshots.pop(user, None)
            filed = user.name if snapshot is None else snapshot[0]
            if self._identity.get(filed) is user:
                del self._identity[filed]
            self._release(user)
        for user in self._deleted:  # their deletion is undone
            _DELETED.discard(user)
        self._new, self._dirty, self._deleted = [], set(), []
        self._writes, self._own_names = {}, None
        self._forget_history()
        self._written = weakref.WeakKeyDictionary()
        self._inserted = weakref.WeakSet()
        for user, name in [*written, *changed]:
            # Unfile it from the names it took here (flushed, or assigned): it is ``name`` again.
            snapshot = self._snapshots.get(user)
            for filed in {user.name, name if snapshot is None else snapshot[0]}:
                if filed != name and self._identity.get(filed) is user:
                    del self._identity[filed]
            row = committed.get(name)
            if row is not None:
                self._load(user, name, row)  # the stored values again
            else:
                self._snapshots[user] = (user.name, user.number, user.created_at, user.updated_at)

    def _forget_history(self) -> None:
        """The unit of work ended: its ledger starts afresh."""
        self._flushed_names, self._deleted_names, self._bulk = set(), set(), False

    def _duplicate_among(self, names: builtins.list[str]) -> str:
        """The name a bulk insert of ``names`` that hit a duplicate reports, as the real one does.

        A name repeated in ``names`` first; else the first taken one, as
        :func:`userstore.duplicates.name_in_transaction` finds it.
        """
        repeated = _repeated(names)
        if repeated is not None:
            return repeated
        return self._first_taken(names, self._visible) or _first(names)

    def _duplicate_after_rollback(self, sent: builtins.list[str]) -> str:
        """The name a flush that hit a duplicate reports, as the real one does.

        As :func:`userstore.duplicates.name_from_history`: a name sent twice;
        else one this unit of work wrote earlier; else one that is committed
        (not counting names this unit deleted, which the rollback restores).
        """
        repeated = _repeated(sent)
        if repeated is not None:
            return repeated
        for name in sent:
            if name in self._flushed_names:
                return name
        committed = self._store._rows.get
        remaining = [name for name in sent if name not in self._deleted_names]
        return self._first_taken(remaining, committed) or _first(sent)

    @staticmethod
    def _first_taken(
        names: builtins.list[str], row_of: Callable[[str], _Stored | None]
    ) -> str | None:
        """The taken name the real lookup finds first, or ``None``.

        It asks in chunks, in the order of ``names``, and takes the first row
        of the first chunk that has any: the least name of that chunk on SQLite
        and MariaDB, which answer in index order. (PostgreSQL may answer in
        the order its rows were stored, so the real one may name another.)
        """
        unique = iter(dict.fromkeys(names))
        while chunk := builtins.list(islice(unique, _LOOKUP_CHUNK)):
            taken = [name for name in chunk if row_of(name) is not None]
            if taken:
                return min(taken)
        return None

    def _sorted_own_names(self) -> builtins.list[str]:
        if self._own_names is None:
            self._own_names = sorted(name for name, w in self._writes.items() if w.row is not None)
        return self._own_names

    def _names_after(self, after: str | None, limit: int | None) -> builtins.list[str]:
        """One keyset page of the names this unit of work sees, in code-point order."""
        committed_names = self._store._names
        writes = self._writes
        own = self._sorted_own_names()

        def committed_from(start: int) -> Iterator[str]:
            for index in range(start, len(committed_names)):
                name = committed_names[index]
                if name not in writes:
                    yield name

        start = 0 if after is None else bisect_right(committed_names, after)
        own_start = 0 if after is None else bisect_right(own, after)
        merged = heapq.merge(committed_from(start), islice(own, own_start, None))
        return builtins.list(merged if limit is None else islice(merged, limit))

    def _count(self) -> int:
        committed = self._store._rows
        count = len(committed)
        for name, write in self._writes.items():
            count += (write.row is not None) - (name in committed)
        return count

    def _held(self) -> set[User]:
        return {
            *self._identity.values(),
            *self._new,
            *self._written.keys(),
            *self._deleted,
            *self._inserted,
        }

    def _savepoint_state(self) -> _SavepointState:
        users = self._held()
        return _SavepointState(
            writes=dict(self._writes),
            new=builtins.list(self._new),
            inserted=set(self._inserted),
            deleted=builtins.list(self._deleted),
            identity=dict(self._identity.items()),
            snapshots={user: self._snapshots[user] for user in users if user in self._snapshots},
            written=dict(self._written.items()),
            history=(set(self._flushed_names), set(self._deleted_names), self._bulk),
            values={
                user: (user.name, user.number, user.created_at, user.updated_at) for user in users
            },
        )

    def _restore(self, state: _SavepointState) -> None:
        for user in self._held():
            if user not in state.values:
                self._release(user)
        for user in self._deleted:
            if user not in state.deleted:  # deleted after the savepoint: not any more
                _DELETED.discard(user)
        self._writes, self._own_names = dict(state.writes), None
        self._new, self._deleted = builtins.list(state.new), builtins.list(state.deleted)
        self._dirty = set()
        self._inserted = weakref.WeakSet(state.inserted)
        self._identity = weakref.WeakValueDictionary(state.identity)
        self._snapshots = weakref.WeakKeyDictionary(state.snapshots)
        self._written = weakref.WeakKeyDictionary(state.written)
        flushed, deleted, self._bulk = state.history
        self._flushed_names, self._deleted_names = set(flushed), set(deleted)
        for user, values in state.values.items():
            _set_values(user, values)


_FIELDS: Final = ("name", "number", "created_at", "updated_at")


def _repeated(names: builtins.list[str]) -> str | None:
    """The first name given more than once, by first sight (as the real ledger's rule)."""
    return next((name for name, seen in Counter(names).items() if seen > 1), None)


def _first(names: builtins.list[str]) -> str:
    return names[0] if names else "<unknown>"


def _set_values(user: User, values: _Snapshot) -> None:
    """Give a user values the store holds (valid already): no validation, no change event."""
    for key, value in zip(_FIELDS, values, strict=True):
        set_committed_value(user, key, value)


@dataclass
class _SavepointState:
    writes: dict[str, _Write]
    new: builtins.list[User]
    inserted: set[User]
    deleted: builtins.list[User]
    identity: dict[str, User]
    snapshots: dict[User, _Snapshot]
    written: dict[User, str]
    history: tuple[set[str], set[str], bool]
    values: dict[User, _Snapshot]


class InMemorySavepoint:
    """A savepoint inside an :class:`InMemorySession` (from ``begin_nested()``).

    As a context manager it is released when the block ends and rolled back
    when the block raises.
    """

    def __init__(self, session: InMemorySession) -> None:
        self._session = session
        self._state: _SavepointState | None = session._savepoint_state()

    def rollback(self) -> None:
        """Undo everything the unit of work did since the savepoint; users get their values back."""
        if self._state is not None:
            self._session._restore(self._state)
            self._state = None

    def commit(self) -> None:
        """Release the savepoint, keeping what came after it (flushed into the unit of work)."""
        if self._state is not None:
            self._state = None
            self._session.flush()

    def __enter__(self) -> InMemorySavepoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


class InMemoryUserRepository:
    """:class:`~userstore.UserRepository`'s verbs over an in-memory unit of work.

    The same arguments, results, errors and rules as the real repository (see
    its docstrings): ``add`` stages, reads flush staged changes first and see
    them, ``commit`` publishes the unit of work atomically to the store, a
    failure (a duplicate, say) rolls the whole unit of work back and leaves
    the repository ready, and users stay readable after all of it.

    Args:
        source: An :class:`InMemoryUserStore` (the repository gets a unit of
            work of its own) or an :class:`InMemorySession` to share.

    Raises:
        InvalidUserError: ``source`` is neither.
    """

    def __init__(self, source: InMemoryUserStore | InMemorySession) -> None:
        if isinstance(source, InMemoryUserStore):
            source = source.session()
        if not isinstance(source, InMemorySession):
            raise InvalidUserError(
                "InMemoryUserRepository takes an InMemoryUserStore or an InMemorySession, "
                f"got {type(source).__name__}"
            )
        self._session = source
        self._store = source.store

    @property
    def session(self) -> InMemorySession:
        """The unit of work this repository works on."""
        return self._session

    @observed("add")
    def add(self, user: User) -> User:
        """Stage a new user; see :meth:`userstore.UserRepository.add`.

        Raises:
            InvalidUserError: ``user`` is not a ``User``, has no name,
                belongs to another unit of work or session, or was deleted
                (build a new ``User`` to add the name again). A user loaded
                by a unit of work that has ended is staged as a new row, as
                the real repository stages it.
            DuplicateUserError: this unit of work holds another loaded user of
                this name and it is stored; the unit of work was rolled back.
        """
        if not isinstance(user, User):
            raise InvalidUserError(f"add() takes a User, got {type(user).__name__}")
        if user in _DELETED:
            raise InvalidUserError(
                f"User {user.name!r} was deleted; build a new User to add the name again"
            )
        session = self._session
        owner = _owner(user)
        if owner is session:
            return user
        if owner is not None or instance_state(user).session is not None:
            raise InvalidUserError(
                f"User {user.name!r} belongs to another session; add it there, or build a new User"
            )
        name = user.name
        if name is None:
            raise InvalidUserError("name is required, got None")
        existing = session._identity.get(name)
        if existing is not None:
            self._resolve_identity_conflict(name)
        session._own(user)
        session._new.append(user)
        return user

    def _resolve_identity_conflict(self, name: str) -> None:
        """An add() of a name this unit of work has loaded: a duplicate, or a stale user."""
        session = self._session
        session.flush()  # a pending rename of the loaded user counts
        self._store._note(f"SELECT {name!r}")
        if session._visible(name) is not None:
            session._discard()
            raise DuplicateUserError(name)
        stale = session._identity.get(name)
        if stale is not None:  # deleted by another unit of work: it leaves the unit of work
            del session._identity[name]
            session._release(stale)

    @observed("get")
    def get(self, name: str) -> User | None:
        """Return the user called ``name``, or ``None``; see :meth:`userstore.UserRepository.get`.

        Raises:
            InvalidUserError: ``name`` is not a valid name.
            DuplicateUserError: the autoflush of staged users hit a taken name.
        """
        validate_name(name)
        return self._get(name, refresh=self._before_read())

    def _get(self, name: str, *, refresh: bool) -> User | None:
        self._store._note(f"SELECT {name!r}")
        row = self._session._visible(name)
        return None if row is None else self._session._loaded(name, row, refresh=refresh)

    @observed("get_one")
    def get_one(self, name: str) -> User:
        """Return the user called ``name``.

        Raises:
            UserNotFoundError: no such user.
            InvalidUserError: ``name`` is not a valid name.
        """
        user = self.get(name)
        if user is None:
            raise UserNotFoundError(name)
        return user

    @observed("exists")
    def exists(self, name: str) -> bool:
        """Return whether a user called ``name`` exists.

        Raises:
            InvalidUserError: ``name`` is not a valid name.
        """
        validate_name(name)
        self._before_read()
        self._store._note(f"SELECT {name!r}")
        return self._session._visible(name) is not None

    @observed("count")
    def count(self) -> int:
        """Return the number of users, staged ones included."""
        self._before_read()
        self._store._note("SELECT COUNT")
        with self._store._lock:
            return self._session._count()

    @observed("delete")
    def delete(self, name: str) -> None:
        """Delete the user called ``name`` within the current unit of work.

        Raises:
            UserNotFoundError: no such user.
            InvalidUserError: ``name`` is not a valid name.
        """
        user = self.get_one(name)
        session = self._session
        session._touch(user, name)
        session._write(name, None, "DELETE")
        if session._identity.get(name) is user:
            del session._identity[name]
        session._dirty.discard(user)  # (the delete wins over an unflushed assignment)
        session._deleted.append(user)
        session._flushed_names.discard(name)
        session._deleted_names.add(name)
        _DELETED.add(user)

    @observed("list")
    def list(self, *, after: str | None = None, limit: int | None = None) -> builtins.list[User]:
        """Return users in code-point order of name, one keyset page at a time.

        Args:
            after: Return only names strictly greater than this one.
            limit: The most users to return; ``None`` for all.

        Raises:
            InvalidUserError: ``after`` is not a valid name or ``limit`` is
                negative or not an int.
        """
        if after is not None:
            validate_name(after, field="after")
        validate_limit(limit)
        refresh = self._before_read()
        session = self._session
        self._store._note("SELECT PAGE")
        with self._store._lock:
            names = session._names_after(after, limit)
            rows = [(name, session._visible(name)) for name in names]
        return [session._loaded(name, row, refresh=refresh) for name, row in rows if row]

    @observed("add_many")
    def add_many(self, users: Iterable[Row], *, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Insert many users in this unit of work; see :meth:`userstore.UserRepository.add_many`.

        Returns:
            The number of users inserted.

        Raises:
            InvalidUserError: a row or ``batch_size`` is invalid (the message
                names the row's position); nothing of this call is written,
                and the rest of the unit of work is kept.
            DuplicateUserError: a name is taken or repeats in the input; the
                unit of work was rolled back.
        """
        inserted = 0

        def insert(batch: Batch) -> None:
            nonlocal inserted
            session = self._session
            seen: set[str] = set()
            for name, _ in batch:
                if name in seen or session._visible(name) is not None:
                    raise DuplicateUserError(session._duplicate_among([n for n, _ in batch]))
                seen.add(name)
            stamp = self._store._now()
            for name, number in batch:
                session._write(name, (number, stamp, stamp), "INSERT")
            inserted += len(batch)

        self._write_in_batches(users, batch_size, insert)
        return inserted

    @observed("upsert")
    def upsert(self, name: str, number: int | None) -> User:
        """Insert the user, or set its number if the name exists.

        Returns:
            The user as stored, loaded into this unit of work.

        Raises:
            InvalidUserError: ``name`` or ``number`` is invalid.
        """
        self.upsert_many([(name, number)])
        user = self._get(name, refresh=True)
        assert user is not None  # written in this very unit of work
        return user

    @observed("upsert_many")
    def upsert_many(
        self, rows: Iterable[Row], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> UpsertResult:
        """Insert new users and set the number of existing ones.

        See :meth:`userstore.UserRepository.upsert_many`: within one batch a
        repeated name counts once, with its last number; ``updated_at`` moves
        only when the number changes.

        Returns:
            How many rows were inserted, updated (number changed) and unchanged.

        Raises:
            InvalidUserError: a row is invalid (the message names its position).
        """
        inserted = updated = unchanged = 0

        def upsert(batch: Batch) -> None:
            nonlocal inserted, updated, unchanged
            session = self._session
            stamp = self._store._now()
            for name, number in last_of_each_name(batch):
                current = session._visible(name)
                if current is None:
                    session._write(name, (number, stamp, stamp), "UPSERT")
                    inserted += 1
                elif current[0] != number:
                    session._write(name, (number, current[1], stamp), "UPSERT")
                    updated += 1
                else:
                    unchanged += 1

        self._write_in_batches(rows, batch_size, upsert)
        return UpsertResult(inserted, updated, unchanged)

    def _write_in_batches(
        self, rows: Iterable[Row], batch_size: int, write: Callable[[Batch], None]
    ) -> None:
        """Validate rows batch by batch and write each, all or nothing (as the real one does)."""
        check_batch_size(batch_size)
        batches = outside_the_call(validated_batches(rows, batch_size))  # the rows are the app's
        sequence = isinstance(rows, Sequence)
        if sequence:
            batches = iter(builtins.list(batches))  # every row validated before any write
        session = self._session
        session.flush()
        savepoint = None if sequence else session._savepoint_state()
        try:
            for batch in batches:
                write(batch)
                session._bulk = True
                self._refresh_loaded(name for name, _ in batch)
        except DuplicateUserError:
            session._discard()
            raise
        except DatabaseError as exc:  # (raised by the input): the unit of work is rolled back
            session._discard()
            raise _rolled_back(exc, "memory") from exc
        except BaseException as exc:
            if not isinstance(exc, Exception):  # nothing of an interrupted call is kept
                session._discard()
            elif savepoint is not None:  # a bad row, or an input that broke: this call only
                session._restore(savepoint)
            raise

    def _refresh_loaded(self, names: Iterable[str]) -> None:
        """Give the users this unit of work holds the values a bulk write gave their rows."""
        session = self._session
        if not session._identity:
            return
        for name in names:
            user = session._identity.get(name)
            row = session._visible(name)
            if user is not None and row is not None:
                session._touch(user, name)
                session._load(user, name, row)

    def iter_all(self, *, batch_size: int = 1000) -> Iterator[User]:
        """Yield every user in name order, a keyset page (one ``list`` call) at a time.

        Raises:
            InvalidUserError: ``batch_size`` is not a positive int (raised by
                this call, before any iteration).
        """
        check_batch_size(batch_size)
        return keyset_pages(self._page, batch_size)

    @observed("iter_all")
    def _page(self, *, after: str | None, limit: int) -> builtins.list[User]:
        """One page of ``iter_all``: a ``list`` call, observed as an ``iter_all`` call."""
        return self.list(after=after, limit=limit)

    @observed("commit")
    def commit(self) -> None:
        """Publish the unit of work atomically; see :meth:`userstore.UserRepository.commit`.

        Raises:
            DuplicateUserError: a staged name is taken; nothing was written.
            TransientDatabaseError: a user changed here was deleted or
                renamed by another unit of work meanwhile; nothing was written.
        """
        self._session.commit()

    @observed("rollback")
    def rollback(self) -> None:
        """Discard the unit of work; users it wrote show their stored values again."""
        self._session.rollback()

    def read_token(self) -> str:
        """A read token, as :meth:`userstore.UserRepository.read_token` gives.

        The fake has one store and no replicas: its reads are never stale,
        and its token (``memory:``) is met everywhere.
        """
        return "memory:"

    def _observed_unit(self) -> object:
        return self._session

    def _observed_backend(self) -> str:
        return "memory"

    def _before_read(self) -> bool:
        """Autoflush staged changes; return whether the read may refresh loaded users."""
        session = self._session
        if session.autoflush:
            session.flush()
        return session._refreshing()
