"""Engines that stay correct behind a transaction-pooling proxy: PgBouncer in transaction mode.

Behind PgBouncer's ``pool_mode = transaction`` a client connection holds a
server connection for one transaction only; its next transaction may run on
another server connection, one another client used a moment ago. Anything a
connection leaves on the server beyond its transaction is then missing where
it is next needed, or in the way of someone else. userstore's own SQL leaves
nothing there on PostgreSQL: it sends no ``SET`` (only MariaDB's sessions get
one), takes its migration lock with ``pg_advisory_xact_lock`` (released with
the migration's transaction), runs ``COPY`` inside the unit of work's
transaction, keeps no temporary table, ``LISTEN`` or held cursor (``iter_all``
reads keyset pages). The drivers do leave something: prepared statements.

- psycopg prepares a query on the server once it has run five times
  (``prepare_threshold``), as ``_pg3_0`` and so on, and executes it by name
  afterwards: on another server connection that name "does not exist", or
  "already exists" when another client prepared its own ``_pg3_0`` there.
  ``prepare_threshold=None`` turns that off; every statement is sent with
  its text (one round trip, as before).
- asyncpg, through SQLAlchemy's adapter, prepares every statement and keeps
  it in two caches (asyncpg's ``statement_cache_size`` and SQLAlchemy's
  ``prepared_statement_cache_size``) under per-connection names
  (``__asyncpg_stmt_1__``), which clash in the same two ways. Both caches are
  turned off and every statement is prepared unnamed: ``Parse`` with the empty
  name, which each later ``Parse`` replaces and PostgreSQL keeps per server
  connection, so no name can clash and nothing piles up on the server.
  (Unique names, a uuid per statement as SQLAlchemy's documentation suggests,
  avoid the clash too but leave most of those statements prepared on the
  server connections where they were made: asyncpg closes a statement in the
  client connection's next transaction, by then often on another server
  connection. Measured here: some 160 leaked statements per server connection
  after 1,200 short transactions; none with unnamed ones.)

Only PostgreSQL has such a pooler here: asking for it on SQLite or MariaDB is
refused, as a setting that cannot mean what it says.
"""

from __future__ import annotations

import re
from typing import Any, Final

from sqlalchemy import URL

from userstore.errors import ConfigurationError

# Every driver userstore speaks to PostgreSQL, and what keeps each one's
# prepared statements inside a transaction (see the module docstring).
_CONNECT_ARGS: Final[dict[str, dict[str, Any]]] = {
    "psycopg": {"prepare_threshold": None},
    "psycopg_async": {"prepare_threshold": None},
    "asyncpg": {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": lambda: "",
    },
}


def configure(resolved: URL, connect_args: dict[str, Any], transaction_pooling: object) -> None:
    """Add to ``connect_args`` what makes the URL's driver safe behind transaction pooling.

    Called by the engine factories before the caller's own ``connect_args``
    are merged, so those still win.

    Args:
        resolved: The engine's URL, its driver filled in by :func:`~userstore.resolve_url`.
        connect_args: The engine's ``connect_args`` so far; updated in place.
        transaction_pooling: The caller's ``transaction_pooling`` keyword.

    Raises:
        ConfigurationError: ``transaction_pooling`` is not a bool, or is True
            for a database other than PostgreSQL.
    """
    if not isinstance(transaction_pooling, bool):
        raise ConfigurationError(
            f"transaction_pooling must be True or False, got {type(transaction_pooling).__name__}"
        )
    if not transaction_pooling:
        return
    backend = resolved.get_backend_name()
    if backend != "postgresql":
        raise ConfigurationError(
            "transaction_pooling=True is for PostgreSQL behind PgBouncer in transaction mode; "
            f"userstore knows no such pooler for {backend}"
        )
    connect_args.update(_CONNECT_ARGS[resolved.get_driver_name()])


def check_not_undone(
    resolved: URL, connect_args: dict[str, Any], transaction_pooling: object
) -> None:
    """Refuse ``connect_args`` that would bring prepared statements back behind the pooler.

    The caller's ``connect_args`` win over userstore's settings, as for every
    other option; these would silently break every transaction after the
    first few, so asking for both is refused instead.

    Raises:
        ConfigurationError: ``transaction_pooling=True`` and ``connect_args``
            set one of the driver's prepared-statement options otherwise.
    """
    if transaction_pooling is not True:
        return
    wanted = _CONNECT_ARGS.get(resolved.get_driver_name(), {})
    for option, value in wanted.items():
        if option in connect_args and connect_args[option] is not value:
            raise ConfigurationError(
                f"transaction_pooling=True needs {option}={value!r}; the URL or connect_args "
                "sets it to "
                f"{connect_args[option]!r}, which brings back prepared statements that "
                "outlive a transaction behind the pooler"
            )


_WHOLE_NUMBER: Final = re.compile(r"-?[0-9]{1,9}")


def prepare_threshold_from_url(resolved: URL, connect_args: dict[str, Any]) -> URL:
    """Move psycopg's ``prepare_threshold`` from the URL's query into ``connect_args``, typed.

    A URL carries text, and psycopg compares the threshold as a number: left
    as ``"0"`` it fails every query with a bare ``TypeError``. A whole number
    becomes an ``int`` and ``None`` (any case) or an empty value ``None``;
    anything else is refused. The caller's own ``connect_args`` still win.

    Returns:
        The URL without the parameter (unchanged for other drivers, or when absent).

    Raises:
        ConfigurationError: the value is not a whole number or None, or is given twice.
    """
    if resolved.get_driver_name() not in ("psycopg", "psycopg_async"):
        return resolved
    value = resolved.query.get("prepare_threshold")
    if value is None:
        return resolved
    if not isinstance(value, str):
        raise ConfigurationError("prepare_threshold is given more than once in the URL")
    if value.strip().lower() in ("", "none"):
        connect_args["prepare_threshold"] = None
    elif _WHOLE_NUMBER.fullmatch(value.strip()):
        connect_args["prepare_threshold"] = int(value)
    else:
        raise ConfigurationError(
            f"prepare_threshold in the URL must be a whole number or None, got {value!r}"
        )
    return resolved.difference_update_query(["prepare_threshold"])
