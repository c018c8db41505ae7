"""Which database a URL names, and which of its drivers userstore speaks.

userstore's fast paths (COPY, native upserts, server-side cursors) talk to
the driver directly, so only drivers they were written and tested for are
accepted; anything else is refused here, before any connection is made.
"""

from __future__ import annotations

import os
import re
from typing import Final, Literal, TypeAlias
from urllib.parse import parse_qsl

from sqlalchemy import URL, make_url
from sqlalchemy import exc as sa_exc

from userstore.errors import ConfigurationError

DATABASE_URL_VARIABLE: Final = "USERSTORE_DATABASE_URL"
DEFAULT_DATABASE_URL: Final = "sqlite:///userstore.db"

Flavour: TypeAlias = Literal["sync", "async"]

# backend -> flavour -> (default driver, every driver accepted); "mysql" URLs are MariaDB's.
# A URL naming the other flavour's driver gets this flavour's default, so one
# URL serves an app's sync and async engines.
_DRIVERS: Final[dict[str, dict[Flavour, tuple[str, tuple[str, ...]]]]] = {
    "sqlite": {"sync": ("pysqlite", ("pysqlite",)), "async": ("aiosqlite", ("aiosqlite",))},
    "postgresql": {
        "sync": ("psycopg", ("psycopg",)),
        "async": ("asyncpg", ("asyncpg", "psycopg_async")),
    },
    "mariadb": {"sync": ("pymysql", ("pymysql",)), "async": ("asyncmy", ("asyncmy", "aiomysql"))},
}
_DRIVERS["mysql"] = _DRIVERS["mariadb"]
# The extra that installs each driver, for the message when it is missing.
DRIVER_EXTRAS: Final = {
    "psycopg": "postgresql",
    "pymysql": "mariadb",
    "aiosqlite": "asyncio",
    "asyncpg": "postgresql,asyncio",
    "psycopg_async": "postgresql,asyncio",
    "asyncmy": "mariadb,asyncio",
    "aiomysql": "mariadb,asyncio",
}
# What hosting platforms hand out, and what it means.
_DIALECT_ALIASES: Final = {"postgres": "postgresql"}


def resolve_url(url: str | URL | None = None, *, flavour: Flavour = "sync") -> URL:
    """Return the database URL userstore uses, with its driver filled in.

    Args:
        url: An explicit URL. When ``None``, the environment variable
            ``USERSTORE_DATABASE_URL`` is used, else ``sqlite:///userstore.db``.
        flavour: ``"sync"`` for :func:`~userstore.create_engine`, ``"async"``
            for :func:`~userstore.create_async_engine`.

    Returns:
        The parsed URL. ``postgres://`` is read as ``postgresql://``. A URL
        without a driver, or with a driver of the other flavour, gets the
        flavour's default: psycopg 3 / asyncpg (PostgreSQL), PyMySQL /
        asyncmy (MariaDB), sqlite3 / aiosqlite (SQLite).

    Raises:
        ConfigurationError: the URL is malformed, names a database other than
            SQLite, PostgreSQL or MariaDB, or a driver userstore does not speak.
    """
    if url is None:
        url = os.environ.get(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError, TypeError) as exc:
        # (The URL itself stays out of the message: it may hold a password.)
        raise ConfigurationError(f"not a database URL: {exc}") from None
    dialect, _, driver = parsed.drivername.partition("+")
    dialect = _DIALECT_ALIASES.get(dialect, dialect)
    if dialect not in _DRIVERS:
        raise ConfigurationError(
            f"userstore stores users in SQLite, PostgreSQL or MariaDB; "
            f"{parsed.drivername!r} is none of them"
        )
    default_driver, accepted = _DRIVERS[dialect][flavour]
    other: Flavour = "async" if flavour == "sync" else "sync"
    if not driver or driver in _DRIVERS[dialect][other][1]:
        driver = default_driver
    if driver not in accepted:
        raise ConfigurationError(
            f"userstore does not support the driver {driver!r} for {dialect}; "
            f"use {' or '.join(f'{dialect}+{name}' for name in accepted)} "
            f"(or no driver: {dialect}+{default_driver} is the default)"
        )
    if dialect == "sqlite":
        _check_sqlite_query(parsed)
    elif isinstance(url, str):
        _refuse_empty_hosts(url)
    # SQLAlchemy names SQLite's driver pysqlite but also accepts the bare dialect.
    drivername = dialect if driver == "pysqlite" else f"{dialect}+{driver}"
    return parsed.set(drivername=drivername)


# What SQLAlchemy's pysqlite dialect takes from a URL's query (others pass
# through only as SQLite URI parameters, with uri=true).
_SQLITE_QUERY_KEYS: Final = frozenset(
    {"timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements", "uri"}
)


def _check_sqlite_query(url: URL) -> None:
    """Refuse a SQLite URL parameter that would be silently ignored."""
    if str(url.query.get("uri", "")).lower() in ("true", "1"):
        return
    unknown = sorted(set(url.query) - _SQLITE_QUERY_KEYS)
    if unknown:
        raise ConfigurationError(
            f"SQLite URL parameter(s) {', '.join(unknown)} would be ignored; "
            f"it takes {', '.join(sorted(_SQLITE_QUERY_KEYS))}, or SQLite URI parameters "
            "with uri=true"
        )


# Query parameters that carry a password (libpq's and PyMySQL's names, any case).
_PASSWORD_PARAMETER: Final = re.compile(r"([?&](?:password|passwd|pwd)=)[^&]*", re.IGNORECASE)


def shown_url(url: str | URL) -> str:
    """``url`` as it may be shown to people: every password in it replaced by ``***``.

    That is the user-info password (as SQLAlchemy hides it) and any password
    in the query string (``?password=``, ``passwd=`` or ``pwd=``, any case).
    """
    rendered = make_url(url).render_as_string(hide_password=True)
    return _PASSWORD_PARAMETER.sub(r"\1***", rendered)


def _refuse_empty_hosts(url: str) -> None:
    """Refuse an empty ``host=`` entry, which SQLAlchemy's parser drops without a word.

    Dropped, the URL silently names fewer hosts, or none, and then the
    driver's default host (``localhost``), a server it never named.
    """
    query = url.partition("?")[2]
    hosts = [value for key, value in parse_qsl(query, keep_blank_values=True) if key == "host"]
    for position, value in enumerate(hosts, start=1):
        if not value.strip():
            raise ConfigurationError(f"host parameter {position} of the URL is empty")
