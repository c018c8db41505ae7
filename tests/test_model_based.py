"""A Hypothesis state machine drives the repository and a plain Python model side by side.

Every result and every raised error must match the model, on every backend.
The CI profile is sized to finish in about a minute; run
``pytest tests/test_model_based.py --hypothesis-profile=long`` for a long hunt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import userstore
from tests.flavours import FlavouredEngine
from userstore import (
    DuplicateUserError,
    InvalidUserError,
    User,
    UserNotFoundError,
    UserRepository,
)
from userstore.validation import NAME_MAX_LENGTH, NUMBER_MAX, NUMBER_MIN

# A small pool, so names collide often, full of look-alikes and hostile text.
POOL = [
    "Jenny",
    "jenny",
    "Jenny ",
    "Jénny",
    "Je\u0301nny",
    "😀",
    "O'Brien",
    "100% \\ _",
    "\u200fRTL",
    "'; DROP TABLE users; --",
]
# Two draws in three come from the pool, so duplicates, re-adds after a flush
# and deletes of existing users are common rather than lucky.
valid_names = (
    st.sampled_from(POOL[:4])
    | st.sampled_from(POOL)
    | st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=["Cc"]),
        min_size=1,
        max_size=NAME_MAX_LENGTH,
    )
)
any_names = valid_names | st.sampled_from(["", "x" * 256, "nul\x00", "tab\t", "a\ud800"])
valid_numbers = st.none() | st.integers(NUMBER_MIN, NUMBER_MAX)
any_numbers = (
    valid_numbers
    | st.integers(NUMBER_MAX + 1, 2**64)
    | st.integers(-(2**64), NUMBER_MIN - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.sampled_from(["12", "12abc"])
)


def _is_valid_name(name: object) -> bool:
    try:
        userstore.validation.validate_name(name)
    except InvalidUserError:
        return False
    return True


def _is_valid_number(number: object) -> bool:
    try:
        userstore.validation.validate_number(number)
    except InvalidUserError:
        return False
    return True


class RepositoryModel(RuleBasedStateMachine):
    """Compares UserRepository with a dict-based model of the same semantics.

    Model: ``committed`` is what the database holds; ``view`` is what this
    unit of work sees (staged adds, updates and deletes applied). A duplicate
    add is detected by the database, so it surfaces either at ``add`` (when
    the session still holds that user) or at the next call that flushes;
    ``doomed`` records that such a failure is due. Any failure rolls the
    whole unit of work back.
    """

    stored: Callable[[], list[tuple[str, int | None]]]  # plain reads of what is committed
    clear_users: Callable[[], None]
    flavoured: FlavouredEngine  # the engine under test, sync or async (or the fake)

    def __init__(self) -> None:
        super().__init__()
        self.clear_users()
        self.session = self.flavoured.session()
        self.repo: UserRepository = self.flavoured.repository(self.session)
        self.committed: dict[str, int | None] = {}
        self.view: dict[str, int | None] = {}
        self.doomed: set[str] = set()
        # The session's identity map holds users weakly, and whether an old
        # User is still alive decides whether a duplicate add() is caught at
        # once or at the next flush. Holding every user we touch keeps that,
        # and so each run, deterministic.
        self.held: list[object] = []

    def teardown(self) -> None:
        self.session.close()

    # -- the model's bookkeeping ------------------------------------------

    def _rolled_back(self) -> None:
        self.view = dict(self.committed)
        self.doomed = set()

    def _flushing(self, call: Any, *, may_answer_from_session: bool = False) -> tuple[bool, Any]:
        """Run a call that flushes; return (ok, result), checking a due duplicate.

        ``get`` of a user this session already holds answers from the identity
        map without any SQL, so it may leave a doomed flush for a later call.
        """
        if self.doomed:
            try:
                result = call()
            except DuplicateUserError as error:
                assert error.name in self.doomed
                self._rolled_back()
                return False, None
            if may_answer_from_session:
                self.held.append(result)
                return True, result
            raise AssertionError(f"expected DuplicateUserError for one of {self.doomed}")
        result = call()
        self.held.append(result)
        return True, result

    # -- rules --------------------------------------------------------------

    @rule(name=valid_names, number=valid_numbers)
    def add(self, name: str, number: int | None) -> None:
        self._add(name, number)

    @rule(users=st.lists(st.tuples(valid_names, valid_numbers), min_size=2, max_size=5))
    def add_several(self, users: list[tuple[str, int | None]]) -> None:
        for name, number in users:
            self._add(name, number)

    @rule(name=any_names, number=any_numbers)
    def add_with_possibly_invalid_fields(self, name: object, number: object) -> None:
        if _is_valid_name(name) and _is_valid_number(number):
            self._add(name, number)  # type: ignore[arg-type]
            return
        try:
            self.repo.add(User(name=name, number=number))  # type: ignore[arg-type]
        except InvalidUserError:
            return
        raise AssertionError(f"accepted invalid {name!r}, {number!r}")

    def _add(self, name: str, number: int | None) -> None:
        user = User(name=name, number=number)
        self.held.append(user)
        if name in self.view or name in self.doomed:
            try:
                self.repo.add(user)
            except DuplicateUserError as error:
                # add() may ask the database, whose autoflush can also send
                # an earlier doomed user: either name is right.
                assert error.name in self.doomed | {name}
                self._rolled_back()
                return
            self.doomed.add(name)
            return
        self.repo.add(user)
        self.view[name] = user.number

    @rule(name=any_names)
    def get(self, name: object) -> None:
        if not _is_valid_name(name):
            self._expect_invalid(lambda: self.repo.get(name))  # type: ignore[arg-type]
            return
        ok, user = self._flushing(
            lambda: self.repo.get(name),  # type: ignore[arg-type]
            may_answer_from_session=True,
        )
        if ok:
            expected = (name, self.view[name]) if name in self.view else None  # type: ignore[index]
            assert (None if user is None else (user.name, user.number)) == expected

    @rule(name=valid_names)
    def get_one(self, name: str) -> None:
        def call() -> object:
            try:
                return self.repo.get_one(name)
            except UserNotFoundError as error:
                assert error.name == name
                return None

        ok, user = self._flushing(call, may_answer_from_session=True)
        if ok:
            assert (user is not None) == (name in self.view)

    @rule(name=any_names)
    def exists(self, name: object) -> None:
        if not _is_valid_name(name):
            self._expect_invalid(lambda: self.repo.exists(name))  # type: ignore[arg-type]
            return
        ok, found = self._flushing(lambda: self.repo.exists(name))  # type: ignore[arg-type]
        if ok:
            assert found == (name in self.view)

    @rule()
    def count(self) -> None:
        ok, counted = self._flushing(self.repo.count)
        if ok:
            assert counted == len(self.view)

    @rule(after=st.none() | valid_names, limit=st.none() | st.integers(0, 5))
    def list_page(self, after: str | None, limit: int | None) -> None:
        ok, page = self._flushing(lambda: self.repo.list(after=after, limit=limit))
        if ok:
            names = sorted(n for n in self.view if after is None or n > after)
            expected = names if limit is None else names[:limit]
            assert [(u.name, u.number) for u in page] == [(n, self.view[n]) for n in expected]

    @rule(limit=st.integers(max_value=-1) | st.sampled_from([1.5, "3", True]))
    def list_with_an_invalid_limit(self, limit: object) -> None:
        self._expect_invalid(lambda: self.repo.list(limit=limit))  # type: ignore[arg-type]

    @rule(name=valid_names)
    def delete(self, name: str) -> None:
        def call() -> bool:
            try:
                self.repo.delete(name)
            except UserNotFoundError as error:
                assert error.name == name
                return False
            return True

        ok, deleted = self._flushing(call)
        if ok:
            assert deleted == (name in self.view)
            self.view.pop(name, None)

    @precondition(lambda self: bool(self.view))
    @rule(data=st.data(), number=any_numbers)
    def update_number(self, data: st.DataObject, number: object) -> None:
        name = data.draw(st.sampled_from(sorted(self.view)))
        ok, user = self._flushing(lambda: self.repo.get_one(name), may_answer_from_session=True)
        if not ok:
            return
        if not _is_valid_number(number):
            self._expect_invalid(lambda: setattr(user, "number", number))
            return
        user.number = number
        self.view[name] = user.number

    @rule()
    def commit(self) -> None:
        ok, _ = self._flushing(self.repo.commit)
        if ok:
            self.committed = dict(self.view)

    @rule()
    def rollback(self) -> None:
        self.repo.rollback()
        self._rolled_back()

    def _expect_invalid(self, call: Any) -> None:
        try:
            call()
        except InvalidUserError:
            return
        raise AssertionError("expected InvalidUserError")

    @invariant()
    def committed_rows_match_the_model(self) -> None:
        if self.session.in_transaction():
            return  # on SQLite an open transaction holds the write lock; check between units
        assert dict(self.stored()) == self.committed


def test_the_repository_behaves_like_the_model(
    stored: Callable[[], list[tuple[str, int | None]]],
    clear_users: Callable[[], None],
    flavoured_engine: FlavouredEngine,
) -> None:
    machine = type(
        "RepositoryModelOnBackend",
        (RepositoryModel,),
        {
            "stored": staticmethod(stored),
            "clear_users": staticmethod(clear_users),
            "flavoured": flavoured_engine,
        },
    )
    run_state_machine_as_test(machine)
