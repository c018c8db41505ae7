"""Validation of user input, done in Python before any SQL is sent.

The three backends disagree on bad input (SQLite stores ``1.5`` and 64-bit
integers, PostgreSQL rejects NUL, servers may cut long strings), so every value
is checked here, once, against the strictest common rule.
"""

from __future__ import annotations

import math
import numbers
import re
from datetime import datetime
from decimal import Decimal
from typing import Final

from userstore.errors import InvalidUserError

NAME_MAX_LENGTH: Final = 255
NUMBER_MIN: Final = -(2**31)
NUMBER_MAX: Final = 2**31 - 1
# The largest LIMIT (and batch size) every backend and driver takes: a signed 64-bit int.
LIMIT_MAX: Final = 2**63 - 1

# Unicode category Cc: C0 controls (NUL included), DEL and the C1 controls.
CONTROL_CHARACTER: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def validate_name(name: object, *, field: str = "name") -> str:
    """Return ``name`` if it is a storable user name, else raise.

    Args:
        name: The candidate value.
        field: What to call the value in the error message.

    Returns:
        The name, unchanged.

    Raises:
        InvalidUserError: ``name`` is not a str of 1 to 255 characters that
            encodes as UTF-8 and holds no control characters.
    """
    if not isinstance(name, str):
        raise InvalidUserError(f"{field} must be a str, got {type(name).__name__}")
    length = len(name)
    if length == 0:
        raise InvalidUserError(f"{field} must not be empty")
    if length > NAME_MAX_LENGTH:
        raise InvalidUserError(
            f"{field} must be at most {NAME_MAX_LENGTH} characters, got {length}"
        )
    control = CONTROL_CHARACTER.search(name)
    if control is not None:
        raise InvalidUserError(
            f"{field} must not contain control characters, "
            f"found U+{ord(control.group()):04X} at position {control.start()}"
        )
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidUserError(
                f"{field} must be encodable as UTF-8, found U+{ord(name[exc.start]):04X}"
                f" (a lone surrogate) at position {exc.start}"
            ) from None
    return name


def validate_number(number: object) -> int | None:
    """Return ``number`` if it is storable, else raise.

    Args:
        number: The candidate value.

    Returns:
        ``None``, or the value as a plain ``int``.

    Raises:
        InvalidUserError: ``number`` is not ``None`` or an int (bool excluded) in
            the 32-bit signed range that PostgreSQL and MariaDB store.
    """
    if number is None:
        return None
    if isinstance(number, bool) or not isinstance(number, int):
        raise InvalidUserError(f"number must be an int or None, got {type(number).__name__}")
    if not NUMBER_MIN <= number <= NUMBER_MAX:
        raise InvalidUserError(
            f"number must be between {NUMBER_MIN} and {NUMBER_MAX}, got {number}"
        )
    return int(number)


def validate_timestamp(value: object, *, field: str) -> datetime:
    """Return ``value`` if it is a timezone-aware datetime, else raise.

    Raises:
        InvalidUserError: ``value`` is not a datetime, or is naive (its zone
            would be a guess).
    """
    if not isinstance(value, datetime):
        raise InvalidUserError(f"{field} must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidUserError(f"{field} must be timezone-aware, got naive {value.isoformat()}")
    return value


def validate_limit(limit: object) -> int | None:
    """Return ``limit`` if it is ``None`` or a non-negative int, else raise.

    Raises:
        InvalidUserError: ``limit`` is negative, above :data:`LIMIT_MAX`, or not an int.
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidUserError(f"limit must be an int or None, got {type(limit).__name__}")
    if limit < 0:
        raise InvalidUserError(f"limit must not be negative, got {limit}")
    if limit > LIMIT_MAX:
        raise InvalidUserError(f"limit must be at most {LIMIT_MAX}, got {limit}")
    return limit


def validate_seconds(value: object, *, field: str, allowed: str = "") -> float:
    """Return ``value`` as a float of seconds if it is a finite, non-negative number, else raise.

    Any ``numbers.Real`` (``int``, ``float``, ``Fraction``) or ``Decimal`` is
    taken, ``bool`` is not; ``-0.0`` becomes ``0.0``.

    Args:
        value: The candidate value.
        field: What to call the value in the error message.
        allowed: What else the caller takes, for the message (``" or None"``).

    Raises:
        InvalidUserError: ``value`` is not a finite, non-negative number, or
            is too large for a float (above about 1.8e308 seconds).
    """
    seconds = math.nan
    if not isinstance(value, bool) and isinstance(value, numbers.Real | Decimal):
        try:
            seconds = float(value)
        except (ArithmeticError, ValueError, TypeError):  # 10**400, Decimal('sNaN'), ...
            seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        shown = repr(value)
        if len(shown) > 60:  # 10**400 has 401 digits
            shown = f"{shown[:40]}... ({len(shown)} characters)"
        raise InvalidUserError(
            f"{field} must be a finite, non-negative number of seconds{allowed}, got {shown}"
        )
    return seconds + 0.0
