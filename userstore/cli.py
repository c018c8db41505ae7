"""The ``userstore`` command line: one function per command, one place for exit codes.

Every command runs on one engine, and reaches its database before it starts,
so a database that cannot be reached is told apart from a command that failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final, NoReturn

from sqlalchemy import Engine

from userstore import migrations
from userstore.demo import NOTEBOOK_URL, replay_notebook
from userstore.engine import create_engine
from userstore.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    SchemaDriftError,
    SchemaOutOfDateError,
    UserStoreError,
)
from userstore.sqlite import is_memory_database

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_SCHEMA: Final = 4

_EPILOG: Final = f"""\
database:
  --url (before or after the command), else $USERSTORE_DATABASE_URL, else
  sqlite:///userstore.db. The demo never reads $USERSTORE_DATABASE_URL:
  without --url it runs on {NOTEBOOK_URL}, as the seed notebook did, and
  given a database with users it refuses to run.

exit status:
  {EXIT_OK}  success
  {EXIT_FAILURE}  any other failure (an unknown revision, the demo refusing a database with users)
  {EXIT_USAGE}  usage: bad arguments, a malformed URL, an unsupported or missing driver
  {EXIT_UNREACHABLE}  the database cannot be reached (server down or refusing, bad path or
     credentials)
  {EXIT_SCHEMA}  the schema is behind or ahead of this code, or differs from its models
"""

_IN_MEMORY_NOTE: Final = "(in-memory database: gone when this command exits)"


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"userstore: {message} (see: {self.prog} --help)\n")


class _CannotConnectError(UserStoreError):
    """The command's database could not be connected to, so the command did not run."""


# The one place errors become exit codes: the first matching class wins.
_EXIT_CODES: Final[tuple[tuple[type[UserStoreError], int], ...]] = (
    (ConfigurationError, EXIT_USAGE),
    (_CannotConnectError, EXIT_UNREACHABLE),
    (DatabaseUnavailableError, EXIT_UNREACHABLE),
    (SchemaOutOfDateError, EXIT_SCHEMA),
    (SchemaDriftError, EXIT_SCHEMA),
)


def _demo(engine: Engine, _args: argparse.Namespace) -> None:
    replay_notebook(engine)


def _upgrade(engine: Engine, args: argparse.Namespace) -> None:
    migrations.upgrade(engine, args.revision)
    _report(engine, args, f"at revision {migrations.current(engine) or '<none>'}")


def _downgrade(engine: Engine, args: argparse.Namespace) -> None:
    migrations.downgrade(engine, args.revision)
    _report(engine, args, f"at revision {migrations.current(engine) or '<none>'}")


def _current(engine: Engine, _args: argparse.Namespace) -> None:
    print(migrations.current(engine) or "<none>")  # the answer: printed even with --quiet


def _check(engine: Engine, args: argparse.Namespace) -> None:
    migrations.check(engine)
    _report(engine, args, f"schema matches the models at revision {migrations.head()}")


def _report(engine: Engine, args: argparse.Namespace, message: str) -> None:
    if args.quiet:
        return
    if engine.url.get_backend_name() == "sqlite" and is_memory_database(engine.url):
        message = f"{message} {_IN_MEMORY_NOTE}"
    print(message)


def _add_common_options(
    parser: argparse.ArgumentParser, *, top_level: bool, quiet_help: str
) -> None:
    # --url and --quiet go before or after the command. A command's copies
    # default to SUPPRESS, so leaving them out after it keeps the values given before.
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


def _parser() -> argparse.ArgumentParser:
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
    parser.set_defaults(handler=_demo, default_url=NOTEBOOK_URL, echo_sql=True)
    commands = parser.add_subparsers(title="commands")

    def add_command(
        name: str,
        help_text: str,
        handler: Callable[[Engine, argparse.Namespace], None],
        quiet_help: str,
        *,
        default_url: str | None = None,
        echo_sql: bool = False,
    ) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        _add_common_options(command, top_level=False, quiet_help=quiet_help)
        command.set_defaults(handler=handler, default_url=default_url, echo_sql=echo_sql)
        return command

    reached = "do not report the revision reached"
    add_command(
        "demo",
        f"replay the seed notebook (on {NOTEBOOK_URL} without --url)",
        _demo,
        "do not echo SQL",
        default_url=NOTEBOOK_URL,
        echo_sql=True,
    )
    upgrade = add_command("upgrade", "migrate the schema up (default: to head)", _upgrade, reached)
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = add_command("downgrade", "migrate the schema down to REVISION", _downgrade, reached)
    downgrade.add_argument("revision", help='a revision id, "-1", or "base"')
    add_command(
        "current", "print the database's revision", _current, "no effect: it prints only that"
    )
    add_command(
        "check",
        "fail unless the schema is at head and matches the models",
        _check,
        "print nothing when it matches",
    )
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

    With no command, runs ``demo``. The exit codes are listed by ``--help``:
    0 success, 1 any other failure, 2 usage (arguments, URL, driver), 3 the
    database cannot be reached, 4 the schema is out of date or drifted. A
    failure prints one line, ``userstore: <message>``, on stderr.

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
            args.handler(engine, args)
    except UserStoreError as exc:
        print(f"userstore: {_one_line(str(exc))}", file=sys.stderr)
        return _exit_code(exc)
    return EXIT_OK


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
