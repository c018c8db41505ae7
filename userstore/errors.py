"""The one exception hierarchy of userstore.

Every error the library raises derives from :class:`UserStoreError`, so an app can
catch ours without importing SQLAlchemy or a database driver. How database errors
are mapped onto these classes lives in :mod:`userstore.db_errors`.
"""

from __future__ import annotations


class UserStoreError(Exception):
    """Root of every error raised by userstore."""


class InvalidUserError(UserStoreError, ValueError):
    """An argument failed validation; raised before any SQL is sent.

    The message says what was wrong and what was received, for example
    ``name must be at most 255 characters, got 300``.
    """


class InvalidReadTokenError(UserStoreError, ValueError):
    """A read token (see :meth:`~userstore.UserRepository.read_token`) could not be read.

    Tokens arrive from outside (a cookie, a header), so a malformed one is
    refused before any SQL is sent; the message shows what was received.
    """


class UserNotFoundError(UserStoreError, LookupError):
    """No user has the given name.

    Attributes:
        name: The name that was looked up.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"no user named {name!r}")
        self.name = name


class DuplicateUserError(UserStoreError):
    """A user with this name already exists; the unit of work was rolled back.

    Attributes:
        name: The name that is taken.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"a user named {name!r} already exists; the unit of work was rolled back")
        self.name = name


class DatabaseError(UserStoreError):
    """The database failed the unit of work for a reason that retrying will not fix.

    Raised by a repository call, the unit of work has been rolled back and
    the repository is usable again. The original driver exception is chained
    (``__cause__``, or its ``__cause__``).

    Attributes:
        code: The SQLSTATE (PostgreSQL), error number (MariaDB) or extended
            result name (SQLite) of the failure, when the driver gave one.
        backend: ``"sqlite"``, ``"postgresql"`` or ``"mariadb"``, when known.
    """

    def __init__(
        self, message: str, *, code: str | int | None = None, backend: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.backend = backend


class TransientDatabaseError(DatabaseError):
    """A failure that a retry of the whole unit of work may get past.

    Serialization failures, deadlocks, lock timeouts, a busy SQLite database and
    lost or killed connections all land here. The unit of work has been rolled
    back; the app may redo it from the start.
    """


class DatabaseUnavailableError(TransientDatabaseError):
    """The database could not be reached: connection refused, host down, server restarting.

    Raised when a connection cannot be opened at all. Nothing was sent; the
    app may retry once the server is back (during a restart or a failover).
    Bad credentials or a database that does not exist are plain
    :class:`DatabaseError`: retrying will not fix them.
    """


class WriteSetTooLargeError(DatabaseError):
    """The unit of work is more than the Galera cluster replicates in one write set.

    Every transaction on Galera is replicated as one write set, which the
    cluster's ``wsrep_max_ws_rows`` and ``wsrep_max_ws_size`` bound. Retrying
    will not help: commit the rows in several smaller units of work, or raise
    the limits. The unit of work was rolled back.

    Attributes:
        code: ``None`` when userstore refused before sending anything, else the
            server's error number (1180 for rows, 1105 for bytes).
        backend: ``"mariadb"``.
    """


class ConfigurationError(UserStoreError, ValueError):
    """userstore was given a setting it cannot work with; nothing was sent.

    A malformed database URL, a driver userstore does not support, a driver
    that is not installed (the message names the extra to install), or an
    engine option that would break userstore's guarantees.
    """


class MigrationError(UserStoreError):
    """A migration command could not run, for example given an unknown revision."""


class SchemaDriftError(MigrationError):
    """The database schema differs from what userstore's models declare.

    Attributes:
        differences: What autogenerate found, one item per difference.
    """

    def __init__(self, differences: list[str]) -> None:
        super().__init__(
            "the database schema differs from userstore's models: " + "; ".join(differences)
        )
        self.differences = differences


class SchemaOutOfDateError(MigrationError):
    """The database schema is not at the revision this code expects.

    Attributes:
        database_revision: The revision the database is at (``None`` when unmigrated).
        code_revision: The head revision shipped with this version of userstore.
    """

    def __init__(self, database_revision: str | None, code_revision: str) -> None:
        super().__init__(
            f"database schema is at revision {database_revision or '<none>'}, "
            f"but this code needs revision {code_revision}; "
            "run `python -m userstore upgrade` (or userstore.migrations.upgrade())"
        )
        self.database_revision = database_revision
        self.code_revision = code_revision
