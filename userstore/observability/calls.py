"""The per-call wrapper: a record and a span for each public repository call.

Every public verb of the repositories (real and in-memory, sync and async) is
wrapped by :func:`observed` or :func:`observed_async`. While nobody listens (the
``userstore`` logger not enabled for DEBUG, no slow-call threshold, no tracer
provider) the wrapper checks three flags and calls the method: nothing else.
Otherwise it times the call, logs it (see :mod:`userstore.observability.logs`)
and traces it (see :mod:`userstore.observability.spans`).

One record and one span per public call. userstore's own calls made while
serving one, on the same unit of work (``get_one`` calling ``get``, ``upsert``
calling ``upsert_many``, ``delete`` calling ``get_one``, ``add`` calling
``exists``, an ``iter_all`` page calling ``list``, an async verb running its
sync twin in a greenlet, which shares the coroutine's context), are part of it
and are not observed again. Everything else is observed: calls on another unit
of work, calls made by the app's own code that a call runs (the rows given to
``add_many`` and ``upsert_many`` are iterated with no call in progress), and
calls of a task started during a call (its copied context names a call that
has ended, or, while it still runs, a call of another task). Logging and
tracing never change a call's outcome: whatever the app's handlers, filters or
span processors raise is reported on stderr (see
:mod:`userstore.observability.failures`) and the call returns or raises as it
would have. The undecorated method stays reachable as ``__wrapped__``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar, Token
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar, cast

from userstore.observability.failures import report
from userstore.observability.logs import DEBUG, error_code, log_call, logger, threshold
from userstore.observability.tracing import tracing_active


class Observable(Protocol):
    """A repository whose calls can be observed: it knows its backend and its unit of work."""

    def _observed_backend(self) -> str: ...

    def _observed_unit(self) -> object:
        """The unit of work's identity: the sync ``Session`` (shared by an async
        repository and its sync twin), or the fake's session."""
        ...


_S = TypeVar("_S", bound=Observable)
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _one(_result: object) -> int:
    return 1


def _found(result: object) -> int:
    return 0 if result is None else 1


def _truth(result: object) -> int:
    return 1 if result else 0


def _number(result: Any) -> int:
    return int(result)


def _length(result: Any) -> int:
    return len(result)


def _written(result: Any) -> int:
    return int(result.inserted + result.updated)


def _unknown(_result: object) -> None:
    return None


ROWS: Final[dict[str, Callable[[Any], int | None]]] = {
    "add": _one,  # the user staged
    "get": _found,  # the user returned, if any
    "get_one": _one,
    "exists": _truth,  # the user found, if any
    "count": _number,  # the users counted
    "delete": _one,  # the user deleted
    "list": _length,  # the users returned
    "iter_all": _length,  # the users of the page fetched
    "add_many": _number,  # the users inserted
    "upsert": _one,  # the user written
    "upsert_many": _written,  # inserted + updated (unchanged rows are not written)
    "commit": _unknown,  # the unit of work's writes were counted by the calls that made them
    "rollback": _unknown,
}
"""Each operation's ``userstore_rows`` / ``userstore.rows``: rows written or returned."""

_debug_enabled: Final = functools.partial(logger.isEnabledFor, DEBUG)


class _Call:
    """One observed call: its start, its span (when tracing), and its end.

    While it runs, it is the context's current call, which marks the calls
    userstore makes to serve it (see :func:`_serves`).
    """

    __slots__ = ("_backend", "_operation", "_outer", "_span", "_started", "live", "task", "unit")

    def __init__(self, operation: str, backend: str, unit: object, task: object) -> None:
        self._operation = operation
        self._backend = backend
        self.unit = unit
        self.task = task
        self.live = True
        self._span: tuple[Any, Any] | None = None
        if tracing_active():
            self._span = _started_span(operation, backend)
        self._outer: Token[_Call | None] = _CURRENT.set(self)
        self._started = time.perf_counter()

    def end(self, result: object, error: BaseException | None) -> None:
        seconds = time.perf_counter() - self._started
        self.live = False  # a context copied during the call may outlive it
        try:
            try:
                rows = None if error is not None else ROWS[self._operation](result)
                code = None if error is None else error_code(error)
            except Exception:  # a result that cannot be counted: log it without a count
                rows, code = None, None
            if self._span is not None:
                _finish_span(self._span, rows, error, code, self._operation)
            try:
                log_call(self._operation, self._backend, rows, seconds, error, code)
            except Exception:
                report(f"logging userstore.{self._operation} (a handler, filter or formatter)")
        finally:
            _CURRENT.reset(self._outer)


_CURRENT: Final[ContextVar[_Call | None]] = ContextVar("userstore_current_call", default=None)


def _started_span(operation: str, backend: str) -> tuple[Any, Any] | None:
    """The call's span and context token, or ``None`` if tracing failed to start one."""
    try:
        from userstore.observability import spans

        return spans.start(operation, backend)
    except Exception:
        report(f"starting the span of userstore.{operation} (the tracer or a span processor)")
        return None


def _finish_span(
    span: tuple[Any, Any],
    rows: int | None,
    error: BaseException | None,
    code: str | int | None,
    operation: str,
) -> None:
    try:
        from userstore.observability import spans

        spans.finish(*span, rows, error, code)
    except Exception:
        report(f"ending the span of userstore.{operation} (a span processor)")


def _serves(observable: Observable) -> bool:
    """Whether a sync call on ``observable`` is made by userstore to serve the current call.

    The current call is live and on the same unit of work: a sync call cannot
    run in another task while it does (an async verb's sync twin runs in the
    verb's own task).
    """
    current = _CURRENT.get()
    return current is not None and current.live and current.unit is observable._observed_unit()


def _serves_in_task(observable: Observable, task: object) -> bool:
    """Whether an async call on ``observable`` serves the current call: in the same task too.

    A task started during a call copies its context; while the call runs,
    that task's calls on the same unit of work are its own (and refused).
    """
    current = _CURRENT.get()
    return (
        current is not None
        and current.live
        and current.task is task
        and current.unit is observable._observed_unit()
    )


def _backend(observable: Observable) -> str:
    try:
        return observable._observed_backend()
    except Exception:  # (a repository's session in a state nobody foresaw)
        return "unknown"


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def outside_the_call(items: Iterator[_T]) -> Iterator[_T]:
    """``items``, each produced with no call in progress: the app's code it runs is the app's.

    The rows given to ``add_many`` and ``upsert_many`` are the app's: a
    repository call its generator makes is observed as the app's own. Costs
    nothing while no call is observed.
    """
    if _CURRENT.get() is None:
        return items
    return _outside(items)


def _outside(items: Iterator[_T]) -> Iterator[_T]:
    while True:
        token = _CURRENT.set(None)
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            _CURRENT.reset(token)
        yield item


def observed(
    operation: str,
) -> Callable[[Callable[Concatenate[_S, _P], _T]], Callable[Concatenate[_S, _P], _T]]:
    """Wrap a sync repository method so each call is logged and traced as ``operation``."""
    if operation not in ROWS:
        raise ValueError(f"no row count is defined for {operation!r}")

    def decorate(method: Callable[Concatenate[_S, _P], _T]) -> Callable[Concatenate[_S, _P], _T]:
        @functools.wraps(method)
        def call(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _T:
            if not (_debug_enabled() or threshold.seconds is not None or tracing_active()):
                return method(self, *args, **kwargs)
            if _serves(self):
                return method(self, *args, **kwargs)
            observation = _Call(operation, _backend(self), self._observed_unit(), None)
            try:
                result = method(self, *args, **kwargs)
            except BaseException as error:
                observation.end(None, error)
                raise
            observation.end(result, None)
            return result

        return cast(Callable[Concatenate[_S, _P], _T], call)

    return decorate


def observed_async(
    operation: str,
) -> Callable[
    [Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]],
    Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]],
]:
    """Wrap a coroutine method so each call is logged and traced as ``operation``.

    The span starts in the coroutine, so the greenlet that runs the sync code
    (which shares the coroutine's context) sees it as current.
    """
    if operation not in ROWS:
        raise ValueError(f"no row count is defined for {operation!r}")

    def decorate(
        method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]],
    ) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]:
        @functools.wraps(method)
        async def call(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _T:
            if not (_debug_enabled() or threshold.seconds is not None or tracing_active()):
                return await method(self, *args, **kwargs)
            task = _current_task()
            if _serves_in_task(self, task):
                return await method(self, *args, **kwargs)
            observation = _Call(operation, _backend(self), self._observed_unit(), task)
            try:
                result = await method(self, *args, **kwargs)
            except BaseException as error:
                observation.end(None, error)
                raise
            observation.end(result, None)
            return result

        return cast(Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]], call)

    return decorate
