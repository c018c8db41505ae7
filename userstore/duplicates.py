"""What a session's transaction wrote: to name duplicates, and to undo it truthfully.

Mainly, naming the user behind a duplicate-key failure without parsing error
messages (below). The same ledger also tells a rollback which loaded users
this transaction wrote (:func:`loaded_users`), and unfiles renamed users from
their old names after each flush (:func:`_drop_stale_identity_entries`).

The database says only that *a* key was taken. To name it, each session keeps
a :class:`Ledger` of its current transaction, in ``session.info`` (so every
repository on the session shares it, and none adds anything per repository):
the names each ORM flush sends, the names this transaction has written and
deleted, and whether a bulk write bypassed the ORM. Hooks on the session keep
it true across commits, rollbacks, ``close()``, ``reset()`` and the app's own
savepoints (a rolled-back savepoint takes its names back with it).

After a failure the candidates are the names the failing statement sent:

- a name sent twice is the duplicate;
- else one this transaction wrote earlier is (the rollback has erased it,
  so only the ledger remembers);
- else one that is stored, not counting names this transaction deleted (the
  rollback has put those back).

A transaction that has done a bulk write does not keep its bulk names (that
would grow with the input). Instead, before each later flush the repository
looks the pending names up in the transaction, where every earlier write is
visible (one query, only in such transactions); a bulk batch that fails runs
in its own savepoint, so its names are looked up the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final, TypeAlias

from sqlalchemy import Engine, bindparam, event, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.attributes import set_committed_value

from userstore.errors import DatabaseError
from userstore.models import User

_LEDGER_KEY: Final = "userstore.ledger"
_LOOKUP_CHUNK: Final = 500
# Ordered, so every backend names the same user (PostgreSQL returns rows in storage order).
_NAMES_PRESENT: Final = (
    select(User.name).where(User.name.in_(bindparam("names", expanding=True))).order_by(User.name)
)


_Loaded: TypeAlias = tuple[User, dict[str, object]]  # a user, and the values it holds


@dataclass
class _Marks:
    written: frozenset[str]
    deleted: frozenset[str]
    bulk: bool
    # The loaded users' values as the savepoint began (its begin flushed them):
    # what its rollback returns them to.
    values: dict[int, _Loaded]


@dataclass
class Ledger:
    """What the current transaction of one session has written, for naming duplicates."""

    written: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    bulk: bool = False
    flushing: list[str] = field(default_factory=list)
    # Every name this transaction wrote in any way (insert, update, delete,
    # bulk): the users whose loaded values a rollback may have made untrue.
    touched: set[str] = field(default_factory=set)
    touching: list[str] = field(default_factory=list)
    renamed_from: list[Any] = field(default_factory=list)
    savepoints: dict[SessionTransaction, _Marks] = field(default_factory=dict)
    ended: tuple[SessionTransaction, _Marks] | None = None
    # What a rollback in progress will expire (see loaded_users), taken before it does.
    rolling_back: tuple[list[_Loaded], list[_Loaded]] | None = None
    removed: list[User] = field(default_factory=list)  # deleted by this transaction's flushes

    def note_bulk_write(self) -> None:
        """Record that a bulk statement wrote rows the ORM did not see."""
        self.bulk = True

    def candidates(self) -> list[str]:
        """The names the failing flush sent (taken: each failure reads them once)."""
        names, self.flushing = self.flushing, []
        return names

    def _clear(self) -> None:
        if not (self.written or self.deleted or self.bulk or self.touched or self.savepoints):
            self.flushing = []
            return
        self.removed = []
        self.written.clear()
        self.deleted.clear()
        self.bulk = False
        self.flushing = []
        self.touched.clear()
        self.touching = []
        self.savepoints.clear()
        self.ended = None


def ledger(session: Session) -> Ledger:
    """Return the session's ledger, creating it and its hooks on first use."""
    found = session.info.get(_LEDGER_KEY)
    if isinstance(found, Ledger):
        return found
    created = Ledger()
    session.info[_LEDGER_KEY] = created
    event.listen(session, "before_flush", _before_flush)
    event.listen(session, "after_flush", _after_flush)
    event.listen(session, "after_flush_postexec", _drop_stale_identity_entries)
    event.listen(session, "after_transaction_create", _after_transaction_create)
    event.listen(session, "after_rollback", _after_rollback)
    event.listen(session, "after_soft_rollback", _after_soft_rollback)
    event.listen(session, "after_transaction_end", _after_transaction_end)
    return created


def _ledger_of(session: Session) -> Ledger:
    found = session.info[_LEDGER_KEY]
    assert isinstance(found, Ledger)
    return found


def pending_names(session: Session) -> list[str]:
    """The names the next flush will write: new users, and renamed ones.

    A name whose stored user is being deleted in the same flush is left out:
    SQLAlchemy turns that pair into an update of the same row.
    """
    return _pending_names(session.new, session.dirty, session.deleted)


def _pending_names(new: Iterable[object], dirty: Iterable[object], deleted: Any) -> list[str]:
    names = [obj.name for obj in new if isinstance(obj, User)]
    names.extend(
        obj.name
        for obj in dirty
        if isinstance(obj, User) and inspect(obj).attrs.name.history.has_changes()
    )
    if names and deleted:
        leaving = {obj.name for obj in deleted if isinstance(obj, User)}
        names = [name for name in names if name not in leaving]
    return names


def _before_flush(session: Session, *_: object) -> None:
    book = _ledger_of(session)
    new, deleted = session.new, session.deleted
    dirty = [obj for obj in session.dirty if isinstance(obj, User)]
    book.flushing = _pending_names(new, dirty, deleted)
    if not dirty and not deleted:  # the common flush: inserts only
        return
    book.touching = [obj.name for obj in (*dirty, *deleted) if isinstance(obj, User)]
    # Flushed deletions leave the identity map; a rollback brings them back, expired.
    book.removed.extend(obj for obj in deleted if isinstance(obj, User))
    book.renamed_from = [
        key for obj in dirty if (key := inspect(obj).key) is not None and key[1][0] != obj.name
    ]


def _drop_stale_identity_entries(session: Session, *_: object) -> None:
    """Unfile renamed users from their old names.

    When SQLAlchemy re-reads a renamed row's server values in the same flush
    (MariaDB: no UPDATE ... RETURNING), it leaves the user filed under its
    old name too; a later load of that name would then land on the renamed
    user. Only the old names of this flush's renames are looked at.
    """
    identity_map = session.identity_map
    transaction = session._transaction  # the innermost, where SQLAlchemy records renames
    for old_key in _ledger_of(session).renamed_from:
        user = identity_map.get(old_key)
        if user is None:
            continue
        state = inspect(user)
        if state.key == old_key:
            continue
        # (No public way to unfile one entry, nor to record the rename so that a
        # rollback files the user under its old name again, as SQLAlchemy does
        # itself when it sees the rename; it did not, having re-read the row.)
        identity_map._dict.pop(old_key, None)
        if transaction is not None and state not in transaction._key_switches:
            transaction._key_switches[state] = (old_key, state.key)
    _ledger_of(session).renamed_from = []


def _after_flush(session: Session, *_: object) -> None:
    # after_flush still sees the flushed objects as new / deleted.
    book = _ledger_of(session)
    deleted = {obj.name for obj in session.deleted if isinstance(obj, User)}
    book.written.difference_update(deleted)
    book.written.update(book.flushing)
    book.deleted.difference_update(book.flushing)
    book.deleted.update(deleted)
    book.touched.update(book.flushing, book.touching)
    book.flushing = []
    book.touching = []


def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        book = _ledger_of(session)
        kept, written = loaded_users(session)
        book.savepoints[transaction] = _Marks(
            frozenset(book.written),
            frozenset(book.deleted),
            book.bulk,
            {id(user): (user, values) for user, values in kept + written},
        )


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    book = _ledger_of(session)
    if transaction.parent is None:  # commit, rollback, close() or reset() of the whole
        book._clear()
        # A rollback (or a failed flush's, once the unit of work ends) expired users:
        # give them values again, now that the session holds no connection.
        rolled_back, book.rolling_back = book.rolling_back, None
        if rolled_back is not None:
            keep_readable(session, *rolled_back)
    elif transaction in book.savepoints:
        # Released or rolled back: only after_soft_rollback, which SQLAlchemy
        # sends after this, tells which; keep the marks until then.
        book.ended = (transaction, book.savepoints.pop(transaction))


def _after_rollback(session: Session) -> None:
    # Sent after the database rolled back and before SQLAlchemy expires the users.
    book = _ledger_of(session)
    if book.rolling_back is None:  # (a failed flush's rollback came first: keep its values)
        book.rolling_back = loaded_users(session)


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    book = _ledger_of(session)
    before: dict[int, _Loaded] = {}
    if book.ended is not None and book.ended[0] is previous_transaction:
        # A savepoint rolled back: forget what was written inside it.
        marks = book.ended[1]
        book.written = set(marks.written)
        book.deleted = set(marks.deleted)
        book.bulk = marks.bulk
        before = marks.values
    book.ended = None
    transaction = session.get_transaction()
    if book.rolling_back is not None and transaction is not None and transaction.is_active:
        # A savepoint rolled back: its users get back their values from its start.
        kept, written = book.rolling_back
        book.rolling_back = None
        for user, _ in written:
            if id(user) in before:
                _give(user, before[id(user)][1], replace=True)
        keep_readable(session, kept, [entry for entry in written if id(entry[0]) not in before])


def name_from_history(
    session: Session, candidates: list[str], written: frozenset[str], deleted: frozenset[str]
) -> str:
    """Name the duplicate after the transaction was rolled back (see the module docstring).

    Args:
        session: The session, whose transaction has been rolled back.
        candidates: The names the failing statement sent.
        written: Names the transaction had written before the failure.
        deleted: Names the transaction had deleted before the failure.
    """
    repeated = _repeated(candidates)
    if repeated is not None:
        return repeated
    for name in candidates:
        if name in written:
            return name
    return first_stored(session, (n for n in candidates if n not in deleted)) or _first(candidates)


def name_in_transaction(session: Session, candidates: list[str]) -> str:
    """Name the duplicate while the failed statement's transaction is still open.

    Every earlier write of the transaction is visible, so the first candidate
    that is stored is the taken one.
    """
    repeated = _repeated(candidates)
    if repeated is not None:
        return repeated
    return first_stored(session, candidates) or _first(candidates)


def _repeated(candidates: list[str]) -> str | None:
    return next((name for name, seen in Counter(candidates).items() if seen > 1), None)


def _first(candidates: list[str]) -> str:
    return candidates[0] if candidates else "<unknown>"


def first_stored(session: Session, candidates: Iterable[str]) -> str | None:
    """A name of ``candidates`` that the session's transaction sees stored, if any.

    Candidates are looked up in chunks, in their order; of the first chunk
    with a stored name, the least such name (code-point order), on every backend.
    """
    iterator = iter(dict.fromkeys(candidates))
    while chunk := list(islice(iterator, _LOOKUP_CHUNK)):
        stored = session.scalars(_NAMES_PRESENT, {"names": chunk}).first()
        if stored is not None:
            return stored
    return None


_COLUMNS: Final = tuple(column.key for column in User.__table__.columns)


def loaded_users(session: Session) -> tuple[list[_Loaded], list[_Loaded]]:
    """The users a rollback would expire, split by whether this transaction wrote them.

    Every rollback of a session with a ledger (the app's own ``rollback()``,
    a savepoint's, a failed ``async with session.begin()``) hands them to
    :func:`keep_readable`, so no attribute read afterwards needs the database:
    under an ``AsyncSession`` such a read would raise ``MissingGreenlet``.

    SQLAlchemy expires every user on rollback, so reading one afterwards
    would go to the database (and fail once the session is closed, or the
    row deleted). A user this transaction did not write still holds what it
    was read with: its values are returned, to be put back. The users it did
    write (or holds with unflushed changes) are returned to be reloaded.
    """
    book = _ledger_of(session)
    kept, written = [], []
    held = list(session.identity_map.values())
    seen = {id(obj) for obj in held}
    held += [user for user in book.removed if id(user) not in seen]
    for obj in held:
        if not isinstance(obj, User):
            continue
        state = inspect(obj)
        values = {key: obj.__dict__[key] for key in _COLUMNS if key in obj.__dict__}
        if state.deleted or state.modified or obj.__dict__.get("name") in book.touched:
            written.append((obj, values))
        else:
            kept.append((obj, values))
    return kept, written


def keep_readable(session: Session, kept: list[_Loaded], written: list[_Loaded]) -> None:
    """Give rolled-back users values again, so reading them never touches the database.

    Users the transaction did not write get back the values they were read
    with. The ones it wrote are read again: inside the transaction that is
    still open (after a savepoint), else on a connection of their own,
    outside the session, so the session opens no new transaction. A user
    whose row is gone (another unit of work deleted it), or that cannot be
    read again, keeps the values it last had here.
    """
    for user, values in kept:
        _give(user, values)
    last_values = {}
    for user, values in written:
        identity = inspect(user).identity  # (after the rollback: a rename is undone)
        if identity is not None:
            last_values[identity[0]] = (user, values)
    if last_values:
        users = {name: user for name, (user, _) in last_values.items()}
        for name in _read_again(session, users):
            last_values.pop(name)
    for user, values in last_values.values():  # gone, or unreadable now
        _give(user, {**dict.fromkeys(_COLUMNS), **values})  # (a value never held here: None)


def _give(user: User, values: dict[str, object], *, replace: bool = False) -> None:
    """Set committed values: on expired attributes only, or on all with ``replace``."""
    for key, value in values.items():
        if replace or key not in user.__dict__:
            set_committed_value(user, key, value)


def _read_again(session: Session, users: dict[str, User]) -> list[str]:
    """Load the stored values of these users (by name); return the names found."""
    names = list(users)
    try:
        if session.in_transaction():
            with session.no_autoflush:
                loaded = session.scalars(
                    _LOADED_AMONG, {"names": names}, execution_options=_FRESH
                ).all()
            return [user.name for user in loaded]
        bind = session.get_bind(User)
        if not isinstance(bind, Engine):
            return []  # (a session joined to an outer connection)
        found = []
        with bind.connect() as connection:
            for row in connection.execute(_STORED_AMONG, {"names": names}).mappings():
                for key, value in row.items():
                    set_committed_value(users[row["name"]], key, value)
                found.append(row["name"])
        return found
    except (sa_exc.SQLAlchemyError, DatabaseError):
        return []


_FRESH: Final = {"populate_existing": True}
_LOADED_AMONG: Final = select(User).where(User.name.in_(bindparam("names", expanding=True)))
_STORED_AMONG: Final = select(*User.__table__.columns).where(
    User.name.in_(bindparam("names", expanding=True))
)
