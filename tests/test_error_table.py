"""The error-mapping table, fed real driver exception classes (no database needed)."""

from __future__ import annotations

import psycopg
import pymysql
import pytest
from sqlalchemy import exc as sa_exc

from userstore import (
    DatabaseError,
    DatabaseUnavailableError,
    DuplicateUserError,
    TransientDatabaseError,
)
from userstore.db_errors import ERROR_RULES, NO_CODE_WHILE_CONNECTING, ErrorRule, classify


def _wrapped(rule: ErrorRule) -> sa_exc.DBAPIError:
    if rule.code == NO_CODE_WHILE_CONNECTING:
        orig: Exception = psycopg.OperationalError("connection refused")
    elif rule.backend == "postgresql":
        orig = psycopg.errors.lookup(str(rule.code))()
    elif rule.backend == "mariadb":
        orig = pymysql.err.OperationalError(rule.code, rule.meaning)
    else:
        orig = _sqlite_error(str(rule.code))
    return rule.sqlalchemy_class("SQL", {}, orig)


def _sqlite_error(name: str) -> Exception:
    class FakeSqliteError(Exception):
        sqlite_errorname = name

    return FakeSqliteError(name)


@pytest.mark.parametrize("rule", ERROR_RULES, ids=lambda r: f"{r.backend}-{r.code}")
def test_each_rule_maps_its_class_and_code(rule: ErrorRule):
    dialect = {"postgresql": "postgresql", "mariadb": "mysql", "sqlite": "sqlite"}[rule.backend]
    connecting = rule.code == NO_CODE_WHILE_CONNECTING
    assert classify(_wrapped(rule), dialect, connecting=connecting) is rule.maps_to


def test_a_server_error_without_a_code_is_unavailable_only_while_connecting():
    refused = sa_exc.OperationalError("SQL", {}, psycopg.OperationalError("refused"))
    assert classify(refused, "postgresql", connecting=True) is DatabaseUnavailableError
    assert classify(refused, "postgresql") is DatabaseError


def _with_sqlstate(error: pymysql.err.MySQLError) -> pymysql.err.MySQLError:
    error.sqlstate = "23000"  # (PyMySQL sets it itself from 1.2; set here for older ones)
    return error


def test_pymysql_errors_are_matched_by_error_number_not_by_their_generic_sqlstate():
    orig = _with_sqlstate(pymysql.err.IntegrityError(1062, "Duplicate entry"))
    assert classify(sa_exc.IntegrityError("SQL", {}, orig), "mariadb") is DuplicateUserError
    other = _with_sqlstate(pymysql.err.IntegrityError(1452, "foreign key"))
    assert classify(sa_exc.IntegrityError("SQL", {}, other), "mariadb") is DatabaseError


def test_a_known_code_under_an_unexpected_class_is_not_trusted():
    orig = psycopg.errors.lookup("23505")()
    assert classify(sa_exc.OperationalError("SQL", {}, orig), "postgresql") is DatabaseError


def test_an_invalidated_connection_is_transient_whatever_its_code():
    error = sa_exc.OperationalError("SQL", {}, Exception("gone"), connection_invalidated=True)
    assert classify(error, "postgresql") is TransientDatabaseError


def test_a_pool_timeout_is_transient_and_other_errors_are_plain_database_errors():
    assert classify(sa_exc.TimeoutError(), "sqlite") is TransientDatabaseError
    assert classify(sa_exc.InvalidRequestError("bad"), "sqlite") is DatabaseError


def test_an_asyncpg_connection_wedged_by_a_killed_operation_is_dropped_as_transient():
    """asyncpg refuses every use of a connection whose COPY died with its server (no code)."""
    from userstore.db_errors import _driver_connection_is_wedged

    class InterfaceError(Exception):
        pass

    wedged = InterfaceError("cannot perform operation: another operation is in progress")
    manual = InterfaceError("cannot use Connection.transaction() in a manually started transaction")
    assert _driver_connection_is_wedged(wedged)
    assert _driver_connection_is_wedged(manual)
    assert not _driver_connection_is_wedged(InterfaceError("connection is closed"))
    assert not _driver_connection_is_wedged(ValueError("another operation is in progress"))
