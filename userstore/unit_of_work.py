"""``run_unit_of_work``: one unit of work, committed, or run again after a transient failure.

The runner opens a unit of work (a session from the app's session factory, or a
repository from any zero-argument callable, such as the in-memory fake's
``store.repository``), hands the work a repository, commits when the work
returns, and rolls back when it raises. A
:class:`~userstore.errors.TransientDatabaseError` (a serialization failure, a
deadlock, a busy SQLite database, a killed connection, a database that cannot
be reached) runs the whole work again in a new unit of work, after a pause,
a bounded number of times. Every other exception is raised at once.

The pause before the n-th retry is drawn uniformly from
``[0, min(max_backoff, backoff * 2 ** (n - 1))]`` ("full jitter"), so clients
that failed together do not retry together, and no pause is longer than
``max_backoff``. The async twin is
:func:`userstore.asyncio.unit_of_work.run_unit_of_work_async`; both share the
argument checks and the pauses defined here. Tests replace ``_sleep`` and
``_random`` (module attributes, looked up at each use) to see the pauses.
"""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, NamedTuple, TypeVar, cast, overload

from sqlalchemy.orm import Session

from userstore.errors import ConfigurationError, InvalidUserError, TransientDatabaseError
from userstore.observability.logs import log_retry
from userstore.protocols import UserRepositoryProtocol
from userstore.repository import UserRepository
from userstore.validation import validate_seconds

__all__ = ["run_unit_of_work"]

_T = TypeVar("_T")
_R = TypeVar("_R", bound=UserRepositoryProtocol)

DEFAULT_ATTEMPTS: Final = 5
DEFAULT_BACKOFF: Final = 0.05
DEFAULT_MAX_BACKOFF: Final = 2.0
# 2.0 ** 1024 overflows; far below that the cap has long taken over.
_LARGEST_DOUBLING: Final = 64

# Looked up at each use, so a test can replace them.
_sleep: Callable[[float], None] = time.sleep
_random: Callable[[], float] = random.random


class RetryPolicy(NamedTuple):
    """How often a unit of work is run, and how long the runner pauses between runs.

    Attributes:
        attempts: Runs in all, the first one included.
        backoff: The cap of the first pause, in seconds; it doubles for each retry.
        max_backoff: No pause is longer than this, in seconds.
    """

    attempts: int
    backoff: float
    max_backoff: float

    def pause_before_retry(self, retry: int) -> float:
        """The seconds to wait before retry number ``retry`` (1 for the second run).

        Drawn uniformly from ``[0, min(max_backoff, backoff * 2 ** (retry - 1))]``.
        """
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(retry - 1, _LARGEST_DOUBLING))
        return ceiling * _random()


def retry_policy(attempts: object, backoff: object, max_backoff: object) -> RetryPolicy:
    """Check the runner's retry arguments; return them as a :class:`RetryPolicy`.

    Raises:
        InvalidUserError: ``attempts`` is not a positive int, or ``backoff`` or
            ``max_backoff`` is not a finite, non-negative number of seconds.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidUserError(f"attempts must be a positive int, got {attempts!r}")
    return RetryPolicy(attempts, _seconds("backoff", backoff), _seconds("max_backoff", max_backoff))


def _seconds(field: str, value: object) -> float:
    return validate_seconds(value, field=field)


def check_callable(field: str, value: object) -> None:
    """Raise :class:`~userstore.errors.InvalidUserError` unless ``value`` can be called."""
    if not callable(value):
        raise InvalidUserError(f"{field} must be callable, got {type(value).__name__}")


OPENING: Final = "opening the unit of work"
IN_THE_WORK: Final = "in the work"
AT_COMMIT: Final = "at commit"
COMMITTED: Final = "after commit"
COMMIT_OUTCOME_NOTE: Final = (
    "the commit itself failed: if the connection was lost during it, the database may "
    "have written this unit of work all the same, so a work that is retried must be "
    "idempotent (upsert, or look before adding)"
)


class AttemptLog:
    """What went wrong in each failed run, told as notes on the error finally raised.

    Only text is kept: an earlier run's exception would keep its frames, and
    the session and cursors in them, alive until the runner returns. Each
    failed run is also a WARNING on the ``userstore`` logger, as it happens.
    """

    def __init__(self, runner: str, policy: RetryPolicy) -> None:
        self._runner = runner
        self._policy = policy
        self._lines: list[str] = []

    def retrying(self, attempt: int, stage: str, error: BaseException, repository: object) -> float:
        """Record that run ``attempt`` (on ``repository``) failed in ``stage``; return the pause."""
        pause = self._policy.pause_before_retry(attempt)
        log_retry(self._runner, attempt, self._policy.attempts, stage, error, pause, repository)
        self._lines.append(
            f"attempt {attempt} of {self._policy.attempts} failed {stage}: "
            f"{type(error).__name__}: {error}; retried after {pause:.3f} s"
        )
        return pause

    def giving_up(self, stage: str, error: BaseException, repository: object) -> None:
        """Add the earlier runs' failures to ``error``, the last run's, about to be raised."""
        attempts = self._policy.attempts
        log_retry(self._runner, attempts, attempts, stage, error, None, repository)
        for line in self._lines:
            error.add_note(f"{self._runner}: {line}")
        error.add_note(
            f"{self._runner}: attempt {self._policy.attempts} of {self._policy.attempts} "
            f"failed {stage}; no attempts left"
        )
        if stage == AT_COMMIT:
            error.add_note(f"{self._runner}: {COMMIT_OUTCOME_NOTE}")


@overload
def run_unit_of_work(
    source: Callable[[], Session],
    work: Callable[[UserRepository], _T],
    *,
    attempts: int = ...,
    backoff: float = ...,
    max_backoff: float = ...,
) -> _T: ...


@overload
def run_unit_of_work(
    source: Callable[[], _R],
    work: Callable[[_R], _T],
    *,
    attempts: int = ...,
    backoff: float = ...,
    max_backoff: float = ...,
) -> _T: ...


def run_unit_of_work(
    source: Callable[[], Session] | Callable[[], UserRepositoryProtocol],
    work: Callable[[Any], _T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = DEFAULT_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
) -> _T:
    """Run ``work`` in a unit of work, commit it, and run it again after a transient failure.

    Each attempt opens a new unit of work from ``source``: when ``source()``
    returns a ``Session`` (``source`` is the factory from
    :func:`~userstore.create_session_factory`), the work gets a
    :class:`~userstore.UserRepository` on it, and the session is closed after
    the attempt; otherwise ``source()`` is the repository itself (an
    :class:`~userstore.testing.InMemoryUserRepository` from
    ``store.repository``, say), which the runner commits or rolls back but
    does not close. When ``work(repository)`` returns, the unit of work is
    committed and the work's result returned. When the work or the commit
    raises, the unit of work is rolled back; a
    :class:`~userstore.errors.TransientDatabaseError` (its subclass
    :class:`~userstore.errors.DatabaseUnavailableError` included) runs the
    whole work again, after a jittered pause (see :mod:`userstore.unit_of_work`),
    and anything else is raised at once: ``DuplicateUserError``,
    ``InvalidUserError``, ``UserNotFoundError``, any other ``DatabaseError``,
    the app's own exceptions (even one caused by a transient error), and
    ``KeyboardInterrupt``, after which nothing of the work is written.

    The work must let transient errors propagate and must not commit itself:
    the runner commits once, at the end, so a retry redoes everything. Its
    result must not need the closed session: users stay readable (the
    factory's sessions do not expire them on commit), but a lazy query or
    iterator would not. A failed commit whose outcome is unknown (the
    connection lost during ``COMMIT``) may have been written all the same,
    and is retried like any transient failure; so make a retried work
    idempotent: ``upsert`` a value rather than add to it, or ``get`` before
    ``add``.

    Args:
        source: A session factory, or a zero-argument callable returning a
            repository (:class:`~userstore.protocols.UserRepositoryProtocol`).
            Called once per attempt.
        work: Called with the repository; does the unit of work's reads and
            writes and returns its result.
        attempts: Runs in all, the first one included.
        backoff: Seconds; the pause before the first retry is drawn from
            ``[0, backoff]``, and the range doubles for each later retry.
        max_backoff: Seconds; no pause is longer.

    Returns:
        What the last, committed, run of ``work`` returned.

    Raises:
        InvalidUserError: an argument is invalid (raised before ``source`` or
            ``work`` is called), ``work`` is a coroutine function, or
            ``source()`` returned neither a ``Session`` nor a sync repository.
        ConfigurationError: ``source()`` returned a session that expires
            users on commit (the result would be unreadable once it closes).
        TransientDatabaseError: every attempt failed transiently: the last
            attempt's error, with a note (``__notes__``) for each attempt
            telling how it failed and how long the runner paused after it,
            and one more when the last commit failed (it may have been
            written). A transient failure once the commit has succeeded
            (closing the session) is raised, never retried.
        Exception: whatever else the work or the commit raised, unchanged;
            the unit of work was rolled back.
    """
    policy = retry_policy(attempts, backoff, max_backoff)
    check_callable("source", source)
    check_callable("work", work)
    if inspect.iscoroutinefunction(work):
        raise InvalidUserError(
            "work is an async function: run it with userstore.run_unit_of_work_async"
        )
    log = AttemptLog("run_unit_of_work", policy)
    attempt = 1
    while True:
        stage = OPENING
        opened: object = None  # the attempt's repository, which its retry record names
        try:
            with _opened(source) as repository:
                opened = repository
                stage = IN_THE_WORK
                result = _undone_on_failure(repository, lambda: _not_awaitable(work(repository)))
                stage = AT_COMMIT
                _undone_on_failure(repository, repository.commit)
                stage = COMMITTED
                return result
        except TransientDatabaseError as error:
            if stage == COMMITTED:  # closing failed: the work is written, never run it again
                raise
            if attempt >= policy.attempts:
                log.giving_up(stage, error, opened)
                raise
            pause = log.retrying(attempt, stage, error, opened)
        opened = None
        _sleep(pause)
        attempt += 1


@contextmanager
def _opened(source: Callable[[], object]) -> Iterator[UserRepositoryProtocol]:
    """One unit of work from ``source``: a repository on a new session, closed afterwards,
    or the repository ``source`` returns."""
    opened = source()
    if isinstance(opened, Session):
        with opened:
            check_keeps_users_readable(opened.expire_on_commit, "run_unit_of_work")
            yield UserRepository(opened)
        return
    if isinstance(getattr(opened, "sync_session", None), Session):
        raise InvalidUserError(
            "source returned an AsyncSession: run the work with userstore.run_unit_of_work_async"
        )
    if inspect.iscoroutinefunction(check_repository(opened, "source")):
        raise InvalidUserError(
            f"source returned an async repository ({type(opened).__name__}): "
            "run the work with userstore.run_unit_of_work_async"
        )
    yield cast(UserRepositoryProtocol, opened)


def check_repository(opened: object, field: str) -> object:
    """Return ``opened.commit``, raising unless ``opened`` has ``commit`` and ``rollback``.

    Raises:
        InvalidUserError: ``opened`` is not a session or a repository.
    """
    commit = getattr(opened, "commit", None)
    if not callable(commit) or not callable(getattr(opened, "rollback", None)):
        raise InvalidUserError(
            f"{field} must return a session or a repository, got {type(opened).__name__}"
        )
    return commit


def check_keeps_users_readable(expire_on_commit: bool, runner: str) -> None:
    """Refuse a session that expires users on commit: the runner's result outlives it.

    Raises:
        ConfigurationError: ``expire_on_commit`` is set.
    """
    if expire_on_commit:
        raise ConfigurationError(
            f"{runner} closes its session before returning, and this session expires users "
            "on commit, so a user the work returns could not be read: make the factory with "
            "userstore.create_session_factory(engine) (or create_async_session_factory), "
            "or expire_on_commit=False"
        )


def _undone_on_failure(repository: UserRepositoryProtocol, step: Callable[[], _T]) -> _T:
    """Run one step of an attempt; roll the unit of work back if it raises anything."""
    try:
        return step()
    except BaseException as error:
        try:
            repository.rollback()
        except Exception as failure:
            # A rollback that fails leaves nothing committed either; the step's
            # error is the one the app needs to see.
            error.add_note(f"rolling the unit of work back failed too: {failure!r}")
        raise


def _not_awaitable(result: _T) -> _T:
    """The work's result, unless it is an awaitable: an async work given to the sync runner."""
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if callable(close):  # a coroutine never awaited would warn when collected
            close()
        raise InvalidUserError(
            "work returned an awaitable: run an async work with userstore.run_unit_of_work_async"
        )
    return result
