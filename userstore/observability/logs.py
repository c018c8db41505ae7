"""The ``userstore`` logger: a record per repository call, slow calls, and the runner's retries.

Silent unless the app configures logging (a ``NullHandler`` keeps Python's
last-resort handler away). Structured fields travel in ``extra`` under flat
``userstore_*`` keys, so JSON formatters pick them up and none clashes with a
``LogRecord`` attribute.
"""

from __future__ import annotations

import logging
import numbers
from decimal import Decimal
from typing import Final

from userstore.errors import DatabaseError
from userstore.observability.failures import report
from userstore.validation import validate_seconds

LOGGER_NAME: Final = "userstore"
logger: Final = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())

DEBUG: Final = logging.DEBUG
WARNING: Final = logging.WARNING
# A call's record names the app's line that made the call: above log_call are
# the observation's end, the wrapper, then the caller.
_APP_FRAME: Final = 4
# A retry's record names the app's call of the runner: above _log_retry are
# log_retry, the attempt log's method, the runner, then the caller.
_RUNNER_CALLER: Final = 5


class _Threshold:
    """The slow-call threshold, in seconds (``None``: no slow-call warnings)."""

    seconds: float | None = None


threshold: Final = _Threshold()


def set_slow_call_threshold(seconds: float | numbers.Real | Decimal | None) -> None:
    """Log a WARNING for every repository call that takes longer than ``seconds``.

    The warning replaces the call's DEBUG record (one record per call) and
    carries the same fields, plus ``userstore_slow_threshold_ms``. It is
    emitted whatever the level of DEBUG records, so an app logging at
    WARNING sees its slow calls alone.

    Args:
        seconds: The threshold, a finite non-negative number of seconds
            (measured around the whole call, failures included): an ``int``,
            a ``float``, a ``Decimal``, a ``Fraction``, any ``numbers.Real``;
            kept as a ``float``. ``None`` turns the warnings off (the
            default).

    Raises:
        InvalidUserError: ``seconds`` is not ``None`` or a finite,
            non-negative number (``bool`` is refused), or is too large for a
            ``float`` (above about 1.8e308 seconds); the threshold is unchanged.
    """
    if seconds is None:
        threshold.seconds = None
        return
    threshold.seconds = validate_seconds(
        seconds, field="the slow-call threshold", allowed=" or None"
    )


def slow_call_threshold() -> float | None:
    """The threshold set by :func:`set_slow_call_threshold`, in seconds, or ``None``."""
    return threshold.seconds


def log_call(
    operation: str,
    backend: str,
    rows: int | None,
    seconds: float,
    error: BaseException | None,
    code: str | int | None,
) -> None:
    """Emit the record of one repository call: DEBUG, or WARNING when it was slow."""
    limit = threshold.seconds
    slow = limit is not None and seconds > limit
    level = WARNING if slow else DEBUG
    if not logger.isEnabledFor(level):
        return
    milliseconds = seconds * 1000.0
    extra: dict[str, object] = {
        "userstore_operation": operation,
        "userstore_backend": backend,
        "userstore_rows": rows,
        "userstore_duration_ms": round(milliseconds, 3),
        "userstore_outcome": "ok" if error is None else "error",
        "userstore_error": None if error is None else type(error).__name__,
        "userstore_error_code": code,
    }
    if slow:
        assert limit is not None
        extra["userstore_slow_threshold_ms"] = round(limit * 1000.0, 3)
    prefix = "slow call: " if slow else ""
    if error is None:
        logger.log(
            level,
            "%suserstore.%s on %s: %s in %.3f ms",
            prefix,
            operation,
            backend,
            "no rows" if rows is None else f"{rows} row" if rows == 1 else f"{rows} rows",
            milliseconds,
            extra=extra,
            stacklevel=_APP_FRAME,
        )
    else:
        logger.log(
            level,
            "%suserstore.%s on %s failed in %.3f ms: %s%s",
            prefix,
            operation,
            backend,
            milliseconds,
            type(error).__name__,
            "" if code is None else f" (code {code})",
            extra=extra,
            stacklevel=_APP_FRAME,
        )


def log_retry(
    runner: str,
    attempt: int,
    attempts: int,
    stage: str,
    error: BaseException,
    pause: float | None,
    repository: object,
) -> None:
    """Emit a WARNING for a failed attempt of the unit-of-work runner; never raise.

    Args:
        runner: ``run_unit_of_work`` or ``run_unit_of_work_async``.
        attempt: The attempt that failed (1 for the first run).
        attempts: Runs in all.
        stage: Where it failed ("in the work", "at commit", ...).
        error: The transient error.
        pause: Seconds before the next attempt; ``None`` when none is left.
        repository: The attempt's repository (``None`` if it failed before
            getting one): its backend is the record's (the session's bind,
            ``memory`` for the fakes).
    """
    if not logger.isEnabledFor(WARNING):
        return
    try:
        _log_retry(runner, attempt, attempts, stage, error, pause, repository)
    except Exception:
        report(f"logging a retry of {runner} (a handler, filter or formatter)")


def retry_backend(repository: object, error: BaseException) -> str:
    """The backend a retry record names: the unit of work's, else the error's, else unknown."""
    observed = getattr(repository, "_observed_backend", None)
    if callable(observed):
        try:
            return str(observed())
        except Exception:  # an app's repository with a method of that name, say
            return "unknown"
    backend = getattr(error, "backend", None)
    return backend if isinstance(backend, str) else "unknown"


def _log_retry(
    runner: str,
    attempt: int,
    attempts: int,
    stage: str,
    error: BaseException,
    pause: float | None,
    repository: object,
) -> None:
    code = error_code(error)
    backend = retry_backend(repository, error)
    cause = type(error).__name__ + ("" if code is None else f" (code {code})")
    extra = {
        "userstore_runner": runner,
        "userstore_attempt": attempt,
        "userstore_attempts": attempts,
        "userstore_stage": stage,
        "userstore_backend": backend,
        "userstore_error": type(error).__name__,
        "userstore_error_code": code,
        "userstore_retry_in_ms": None if pause is None else round(pause * 1000.0, 3),
    }
    if pause is None:
        logger.warning(
            "%s: attempt %d of %d failed %s: %s; no attempts left",
            runner,
            attempt,
            attempts,
            stage,
            cause,
            extra=extra,
            stacklevel=_RUNNER_CALLER,
        )
    else:
        logger.warning(
            "%s: attempt %d of %d failed %s: %s; retrying in %.3f s",
            runner,
            attempt,
            attempts,
            stage,
            cause,
            pause,
            extra=extra,
            stacklevel=_RUNNER_CALLER,
        )


def error_code(error: BaseException) -> str | int | None:
    """The SQLSTATE / driver code behind ``error``: its own ``code``, or its causes'.

    A :class:`~userstore.errors.DuplicateUserError` carries no code; the
    translated driver error it was raised from does.
    """
    seen: BaseException | None = error
    for _ in range(5):  # a short chain; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, DatabaseError) and seen.code is not None:
            return seen.code
        seen = seen.__cause__ or seen.__context__
    return None
