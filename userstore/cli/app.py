"""Parsing, one engine per command, and the one place where errors become exit codes.

Every command runs on one engine, and reaches its database before it starts,
so a database that cannot be reached is told apart from a command that failed.
Commands that read or write users also check that the schema is at head
first, so an unmigrated database says "run userstore upgrade" rather than
failing on a missing table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Final, NoReturn

from sqlalchemy import Engine

from userstore import migrations
from userstore.demo import NOTEBOOK_URL
from userstore.engine import create_engine
from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DuplicateUserError,
    InvalidUserError,
    SchemaDriftError,
    SchemaOutOfDateError,
    TransientDatabaseError,
    UserNotFoundError,
    UserStoreError,
)
from userstore.sqlite import is_memory_database

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_SCHEMA: Final = 4
EXIT_NOT_FOUND: Final = 5
EXIT_DUPLICATE: Final = 6
EXIT_INVALID: Final = 7
EXIT_FILE: Final = 8
EXIT_TRANSIENT: Final = 9
EXIT_INTERRUPTED: Final = 130

Handler = Callable[[Engine, argparse.Namespace], None]

_EPILOG: Final = f"""\
database:
  --url (before or after the command), else $USERSTORE_DATABASE_URL, else
  sqlite:///userstore.db. The demo never reads $USERSTORE_DATABASE_URL:
  without --url it runs on {NOTEBOOK_URL}, as the seed notebook did, and
  given a database with users it refuses to run.

exit status:
  {EXIT_OK}  success
  {EXIT_FAILURE}  any other failure (an unknown revision, the demo refusing a database with users,
     a database error that retrying will not fix)
  {EXIT_USAGE}  usage: bad arguments, a malformed URL, an unsupported or missing driver
  {EXIT_UNREACHABLE}  the database cannot be reached (server down or refusing, bad path or
     credentials)
  {EXIT_SCHEMA}  the schema is behind or ahead of this code (run: userstore upgrade), or differs
     from its models
  {EXIT_NOT_FOUND}  no such user
  {EXIT_DUPLICATE}  the name is taken (or repeats in an import); nothing was written
  {EXIT_INVALID}  an invalid name, number or import row; nothing was written
  {EXIT_FILE}  a file cannot be read or written
  {EXIT_TRANSIENT}  a transient database failure (deadlock, lost connection): running the command
     again may succeed; nothing was written
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); nothing of the command's unit of work was written
"""

_IN_MEMORY_NOTE: Final = "(in-memory database: gone when this command exits)"


class FileAccessError(UserStoreError):
    """A file named on the command line cannot be read or written."""


class _CannotConnectError(UserStoreError):
    """The command's database could not be connected to, so the command did not run."""


# The one place errors become exit codes: the first matching class wins.
_EXIT_CODES: Final[tuple[tuple[type[UserStoreError], int], ...]] = (
    (ConfigurationError, EXIT_USAGE),
    (_CannotConnectError, EXIT_UNREACHABLE),
    (DatabaseUnavailableError, EXIT_UNREACHABLE),
    (SchemaOutOfDateError, EXIT_SCHEMA),
    (SchemaDriftError, EXIT_SCHEMA),
    (UserNotFoundError, EXIT_NOT_FOUND),
    (DuplicateUserError, EXIT_DUPLICATE),
    (InvalidUserError, EXIT_INVALID),
    (FileAccessError, EXIT_FILE),
    (TransientDatabaseError, EXIT_TRANSIENT),
    (DatabaseError, EXIT_FAILURE),
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"userstore: {message} (see: {self.prog} --help)\n")


class AddCommand:
    """Adds commands (or a group of subcommands) to the command line.

    Each command gets ``--url``, ``--quiet`` and ``--json``, accepted before
    or after it, and runs ``handler(engine, args)`` on one engine.
    """

    def __init__(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self._commands = commands

    def __call__(
        self,
        name: str,
        help_text: str,
        handler: Handler,
        quiet_help: str,
        *,
        default_url: str | None = None,
        echo_sql: bool = False,
        needs_schema: bool = True,
    ) -> argparse.ArgumentParser:
        """Add one command; return its parser, for its own arguments.

        Args:
            name: The command's name.
            help_text: One line for ``--help``.
            handler: Runs the command; raises a ``UserStoreError`` to fail it.
            quiet_help: What ``--quiet`` does for this command.
            default_url: The database without ``--url`` (``None``: the
                environment, else ``sqlite:///userstore.db``).
            echo_sql: Echo SQL unless ``--quiet`` (the demo).
            needs_schema: Check the schema is at head before the handler runs.
        """
        command: argparse.ArgumentParser = self._commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common_options(command, top_level=False, quiet_help=quiet_help)
        command.set_defaults(
            handler=handler, default_url=default_url, echo_sql=echo_sql, needs_schema=needs_schema
        )
        return command

    def group(self, name: str, help_text: str) -> AddCommand:
        """Add a command that takes subcommands (``users add``); return their adder."""
        group = self._commands.add_parser(name, help=help_text, description=help_text)
        _add_common_options(group, top_level=False, quiet_help="see each subcommand's --help")
        subcommands = group.add_subparsers(title="commands", required=True, metavar="COMMAND")
        return AddCommand(subcommands)


def report(engine: Engine, args: argparse.Namespace, message: str) -> None:
    """Print a command's confirmation line, unless ``--quiet``."""
    if args.quiet:
        return
    if engine.url.get_backend_name() == "sqlite" and is_memory_database(engine.url):
        message = f"{message} {_IN_MEMORY_NOTE}"
    print(message)


def emit(args: argparse.Namespace, human: str, document: object, *, answer: bool) -> None:
    """Print a command's output: ``document`` as one JSON document with ``--json``, else ``human``.

    Args:
        args: The parsed arguments.
        human: The text for people.
        document: The same content for scripts (datetimes become ISO 8601 UTC).
        answer: Whether this is what was asked for (printed even with
            ``--quiet``) rather than a confirmation.
    """
    if args.quiet and not answer:
        return
    if args.json:
        print(json.dumps(document, ensure_ascii=False, default=_json_value))
    elif human:
        print(human)


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _add_common_options(
    parser: argparse.ArgumentParser, *, top_level: bool, quiet_help: str
) -> None:
    # --url, --quiet and --json go before or after the command. A command's
    # copies default to SUPPRESS, so leaving them out after it keeps the values given before.
    parser.add_argument(
        "--url",
        default=None if top_level else argparse.SUPPRESS,
        help="database URL (see below)" if top_level else "database URL",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help=quiet_help,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="print one JSON document (for scripts) instead of text for people",
    )


def _parser() -> argparse.ArgumentParser:
    # Imported here: each module registers its commands through AddCommand.
    from userstore.cli import schema, transfer, users

    parser = _Parser(
        prog="userstore",
        description="Store users in SQLite, PostgreSQL or MariaDB. Without a command: demo.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(
        parser,
        top_level=True,
        quiet_help="print only errors and what was asked for (the demo: no SQL echo)",
    )
    parser.set_defaults(
        handler=schema.demo, default_url=NOTEBOOK_URL, echo_sql=True, needs_schema=False
    )
    add_command = AddCommand(parser.add_subparsers(title="commands", parser_class=_Parser))
    for module in (schema, users, transfer):
        module.register(add_command)
    return parser


@contextmanager
def _command_engine(args: argparse.Namespace) -> Iterator[Engine]:
    """Yield the one engine the command runs on, once its database has answered.

    Raises:
        ConfigurationError: the URL or its driver cannot be used.
        _CannotConnectError: connecting failed (the database's error is its cause).
    """
    url = args.url if args.url is not None else args.default_url
    engine = create_engine(url, echo=args.echo_sql and not args.quiet)
    try:
        try:
            with engine.connect():
                pass
        except DatabaseError as exc:
            raise _CannotConnectError(f"cannot connect to {engine.url!r}: {exc}") from exc
        yield engine
    finally:
        engine.dispose()


def _exit_code(error: UserStoreError) -> int:
    return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), EXIT_FAILURE)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code.

    With no command, runs ``demo``. The exit codes are listed by ``--help``
    and in README.md. A failure prints one line, ``userstore: <message>``,
    on stderr, never a traceback.

    Args:
        argv: The arguments, without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed --help (0) or a usage error (2)
        return EXIT_OK if not exc.code else EXIT_USAGE
    try:
        with _command_engine(args) as engine:
            if args.needs_schema:
                migrations.assert_current(engine)
            args.handler(engine, args)
    except UserStoreError as exc:
        print(f"userstore: {_one_line(str(exc))}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print(
            "userstore: interrupted; nothing of the command's unit of work was written",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
