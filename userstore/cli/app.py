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
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
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
from userstore.urls import shown_url

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
EXIT_TERMINATED: Final = 143

Handler = Callable[[Engine, argparse.Namespace], None]
Validator = Callable[[argparse.Namespace], None]

# What each exit status means: --help's epilog and README's table are built
# from (and tested against) this one list.
EXIT_STATUSES: Final[tuple[tuple[int, str], ...]] = (
    (EXIT_OK, "success"),
    (
        EXIT_FAILURE,
        "any other failure: an unknown revision, the demo refusing a database with users, "
        "a database error that retrying will not fix",
    ),
    (EXIT_USAGE, "usage: bad arguments, a malformed URL, an unsupported or missing driver"),
    (
        EXIT_UNREACHABLE,
        "the database cannot be reached: server down or refusing, bad path or credentials",
    ),
    (
        EXIT_SCHEMA,
        "the schema is behind or ahead of this code, or a SQLite file does not exist yet "
        "(run: userstore upgrade), or differs from its models",
    ),
    (EXIT_NOT_FOUND, "no such user"),
    (EXIT_DUPLICATE, "the name is taken (or repeats in an import); nothing was written"),
    (
        EXIT_INVALID,
        "an invalid name, number, limit or import row; nothing was written",
    ),
    (EXIT_FILE, "a file cannot be read or written (standard output included)"),
    (
        EXIT_TRANSIENT,
        "a transient database failure (deadlock, lost connection): running the command "
        "again may succeed; nothing was written",
    ),
    (
        EXIT_INTERRUPTED,
        "interrupted (Ctrl-C): nothing of the command's unit of work was written, unless the "
        "message says the interrupt came after the change was committed (once a commit has "
        "begun, Ctrl-C lets it and the command finish)",
    ),
    (
        EXIT_TERMINATED,
        "terminated (SIGTERM) during an import or export: cleaned up as for Ctrl-C, and the "
        "message says whether the import was committed",
    ),
)


def _exit_status_lines() -> str:
    lines = []
    for code, meaning in EXIT_STATUSES:
        lines.extend(
            textwrap.wrap(
                meaning,
                width=96,
                initial_indent=f"  {code:<3} ",
                subsequent_indent=" " * 6,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


_EPILOG: Final = f"""\
database:
  --url (before or after the command), else $USERSTORE_DATABASE_URL, else
  sqlite:///userstore.db. The demo never reads $USERSTORE_DATABASE_URL:
  without --url it runs on {NOTEBOOK_URL}, as the seed notebook did, and
  given a database with users it refuses to run. Through PgBouncer in
  transaction mode, add --transaction-pooling (PostgreSQL only).

exit status:
{_exit_status_lines()}
"""

_IN_MEMORY_NOTE: Final = "(in-memory database: gone when this command exits)"


class FileAccessError(UserStoreError):
    """A file named on the command line cannot be read or written."""


class OutputError(FileAccessError):
    """Standard output could not be written: closed, a reader gone, or a full disk."""


class _CannotConnectError(UserStoreError):
    """The command's database could not be connected to, so the command did not run."""


class _NoDatabaseError(UserStoreError):
    """The SQLite file is missing, and only ``upgrade`` and the demo create one."""


# The one place errors become exit codes: the first matching class wins.
_EXIT_CODES: Final[tuple[tuple[type[UserStoreError], int], ...]] = (
    (ConfigurationError, EXIT_USAGE),
    (_CannotConnectError, EXIT_UNREACHABLE),
    (_NoDatabaseError, EXIT_SCHEMA),
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
        validate: Validator | None = None,
        creates_database: bool = False,
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
            validate: Checks (and may convert) the parsed arguments before
                any engine is built, so bad input fails with no SQL sent;
                raises a ``UserStoreError`` (``InvalidUserError``: exit 7).
            creates_database: May create a SQLite file that does not exist
                (``upgrade``, the demo); any other command fails on one
                with exit 4 rather than leave an empty file behind.
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
            handler=handler,
            default_url=default_url,
            echo_sql=echo_sql,
            needs_schema=needs_schema,
            validate=validate,
            creates_database=creates_database,
        )
        return command

    def group(self, name: str, help_text: str) -> AddCommand:
        """Add a command that takes subcommands (``users add``); return their adder."""
        group = self._commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common_options(group, top_level=False, quiet_help="see each subcommand's --help")
        subcommands = group.add_subparsers(title="commands", required=True, metavar="COMMAND")
        return AddCommand(subcommands)


def report(engine: Engine, args: argparse.Namespace, message: str, document: object = None) -> None:
    """Print a command's confirmation, unless ``--quiet``.

    Args:
        engine: The command's engine (an in-memory database is noted as such).
        args: The parsed arguments.
        message: The line for people.
        document: What ``--json`` prints instead (default: ``{"message": message}``).

    Raises:
        OutputError: standard output could not be written; its message is
            ``message``, whether the change was committed, and why (exit 8).
    """
    if args.quiet:
        return
    if args.json:
        text = json_text({"message": message} if document is None else document)
    elif engine.url.get_backend_name() == "sqlite" and is_memory_database(engine.url):
        text = f"{message} {_IN_MEMORY_NOTE}"
    else:
        text = message
    try:
        write_output(f"{text}\n", flush=True)
    except OutputError as exc:
        done = f"{message}, committed," if _INTERRUPTS.committed else message
        raise OutputError(f"{done} but {exc}") from exc


def emit(args: argparse.Namespace, human: str, document: object, *, answer: bool) -> None:
    """Print a command's output: ``document`` as one JSON document with ``--json``, else ``human``.

    Args:
        args: The parsed arguments.
        human: The text for people.
        document: The same content for scripts (datetimes become ISO 8601 UTC).
        answer: Whether this is what was asked for (printed even with
            ``--quiet``) rather than a confirmation.

    Raises:
        OutputError: standard output could not be written (exit 8).
    """
    if args.quiet and not answer:
        return
    if args.json:
        text = json_text(document)
    elif human:
        text = human
    else:
        return
    try:
        write_output(f"{text}\n", flush=True)
    except OutputError as exc:
        if _INTERRUPTS.committed:
            raise OutputError(f"the change was committed, but {exc}") from exc
        raise


def write_output(text: str, *, flush: bool = False) -> None:
    """Write ``text`` to standard output (``sys.stdout`` as it is now).

    Raises:
        OutputError: standard output is closed (``>&-``), its reader went
            away, or it cannot take more (``> /dev/full``).
    """
    with writing_output():
        stream = sys.stdout
        if stream is None:  # started with it closed
            raise OutputError("standard output is closed")
        stream.write(text)
        if flush:
            stream.flush()


@contextmanager
def writing_output() -> Iterator[None]:
    """Turn a failure to write standard output inside the block into :class:`OutputError`."""
    try:
        yield
    except BrokenPipeError as exc:
        raise OutputError("standard output was closed before all was written") from exc
    except OSError as exc:
        raise OutputError(f"standard output could not be written: {exc}") from exc
    except ValueError as exc:
        if sys.stdout is None or not sys.stdout.closed:
            raise  # not about the output
        raise OutputError(f"standard output could not be written: {exc}") from exc


@contextmanager
def committing() -> Iterator[None]:
    """Commit inside this block: from its start, Ctrl-C no longer cuts the command short.

    A Ctrl-C already pressed stops the command before the commit (nothing is
    written). One pressed from here on is only recorded: the commit and the
    rest of the command (its report) finish, and the command then exits 130
    saying whether the change was committed. So the message for an interrupt
    is always true, whenever it comes.

    Raises:
        KeyboardInterrupt: Ctrl-C was pressed before the block began.
    """
    check_interrupted()
    _INTERRUPTS.deferred = True
    _INTERRUPTS.commit_started = True
    yield
    _INTERRUPTS.committed = True


def check_interrupted() -> None:
    """Stop the command if Ctrl-C was pressed: call it once per page of a long loop.

    Ctrl-C raises ``KeyboardInterrupt`` where the command happens to be, but
    Python drops one raised inside a garbage-collection or weakref callback;
    the command line also records every Ctrl-C, and this raises it again.

    Raises:
        KeyboardInterrupt: Ctrl-C was pressed (and a commit has not begun).
    """
    if _INTERRUPTS.received and not _INTERRUPTS.deferred:
        raise KeyboardInterrupt


class _Interrupts:
    """What Ctrl-C did to this run of the command line."""

    def __init__(self) -> None:
        self.received = False  # Ctrl-C was pressed
        self.deferred = False  # a commit has begun: Ctrl-C is only recorded
        self.commit_started = False
        self.committed = False

    def handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.received = True
        if not self.deferred:
            raise KeyboardInterrupt

    def message(self, error: str | None) -> str:
        """The one line for an interrupted command, ``error`` the failure it also had."""
        if self.committed:
            return "interrupted after the change was committed" + (f"; {error}" if error else "")
        if self.commit_started:  # the commit failed (error), or what it did is unknown
            return "interrupted while committing; " + (
                error or "whether the change was written is unknown: look before running it again"
            )
        return "interrupted; nothing of the command's unit of work was written"


_INTERRUPTS = _Interrupts()


def json_text(document: object) -> str:
    """``document`` as one line of JSON: UTF-8 kept as is, datetimes as ISO 8601 UTC.

    U+2028 and U+2029 are escaped: valid in JSON as they are, but line breaks
    to readers that split lines as Unicode does.
    """
    text = json.dumps(document, ensure_ascii=False, default=_json_value)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def iso_utc(value: datetime) -> str:
    """A timestamp as ISO 8601 in UTC, always with microseconds (a fixed width)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return iso_utc(value)
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
        "--transaction-pooling",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="the PostgreSQL URL is a pooler in transaction mode (PgBouncer): "
        "keep no prepared statements on the server",
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
        handler=schema.demo,
        default_url=NOTEBOOK_URL,
        echo_sql=True,
        needs_schema=False,
        validate=schema.check_demo_arguments,
        creates_database=True,
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
        _NoDatabaseError: a SQLite file that is missing, for a command that does not create one.
        _CannotConnectError: connecting failed (the database's error is its cause).
    """
    url = args.url if args.url is not None else args.default_url
    engine = create_engine(
        url,
        echo=args.echo_sql and not args.quiet,
        transaction_pooling=args.transaction_pooling,
    )
    try:
        if not args.creates_database:
            _refuse_a_missing_sqlite_file(engine)
        try:
            with engine.connect():
                pass
        except DatabaseError as exc:
            raise _CannotConnectError(f"cannot connect to {shown_url(engine.url)}: {exc}") from exc
        yield engine
    finally:
        engine.dispose()


def _refuse_a_missing_sqlite_file(engine: Engine) -> None:
    """Fail, rather than let connecting create an empty SQLite file (a mistyped path)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or is_memory_database(url):
        return
    database = url.database or ""
    if str(url.query.get("uri", "")).lower() in ("true", "1"):
        if not database.startswith("file:"):
            return
        database = database.removeprefix("file:").split("?", 1)[0]
    if not Path(database).exists():
        raise _NoDatabaseError(f"no database at {database}; userstore upgrade creates it")


def _exit_code(error: UserStoreError) -> int:
    return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), EXIT_FAILURE)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code.

    With no command, runs ``demo``. The exit codes are listed by ``--help``
    and in README.md. A failure prints one line, ``userstore: <message>``,
    on stderr (nothing when stderr is closed), never a traceback.

    Ctrl-C is exit 130 with one line saying whether the change was committed
    (see :func:`committing`). Without ``argv`` (the program itself), Ctrl-C is
    ignored once that line is printed, so the status is the one decided.

    Args:
        argv: The arguments, without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code.
    """
    global _INTERRUPTS
    _INTERRUPTS = interrupts = _Interrupts()
    _occupy_closed_standard_descriptors()
    previous_handler, previous_hook = _handle_interrupts(interrupts)
    try:
        try:
            code, error = _run(argv)
        except KeyboardInterrupt:  # anywhere: parsing, connecting, the command, its output
            interrupts.received = True
            code, error = EXIT_INTERRUPTED, None
        # From here on Ctrl-C is only recorded: the line below tells what happened.
        interrupts.deferred = True
        if interrupts.received:  # even one Python dropped (raised in a GC callback)
            code, error = EXIT_INTERRUPTED, interrupts.message(error)
        if error is not None:
            _print_error(error)
        return code
    finally:
        if argv is None:
            # The program itself, about to exit: a Ctrl-C now could only turn the
            # status just decided into death by SIGINT, with no word said.
            previous_handler = signal.SIG_IGN
        _restore_interrupts(previous_handler, previous_hook)


_SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _handle_interrupts(
    interrupts: _Interrupts,
) -> tuple[_SignalHandler, Callable[[sys.UnraisableHookArgs], object] | None]:
    """Send Ctrl-C to ``interrupts``; keep Python's report of a dropped one off stderr."""
    previous_hook = sys.unraisablehook
    default_hook = previous_hook

    def unraisable(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return  # recorded by the handler already; main() reports it
        default_hook(unraisable)

    sys.unraisablehook = unraisable
    try:
        previous_handler: _SignalHandler = signal.signal(signal.SIGINT, interrupts.handle)
    except ValueError:  # not the main thread (main() called from a thread): Python's handler
        return None, previous_hook
    return previous_handler, previous_hook


def _restore_interrupts(
    handler: _SignalHandler, hook: Callable[[sys.UnraisableHookArgs], object] | None
) -> None:
    if handler is not None:
        signal.signal(signal.SIGINT, handler)
    if hook is not None:
        sys.unraisablehook = hook


def _run(argv: Sequence[str] | None) -> tuple[int, str | None]:
    """Run the command; return its exit code and its error message, if it failed."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed --help (0) or a usage error (2)
        return (EXIT_OK if not exc.code else EXIT_USAGE), None
    try:
        if args.validate is not None:
            args.validate(args)  # before any engine: bad input sends no SQL
        with _command_engine(args) as engine:
            if args.needs_schema:
                migrations.assert_current(engine)
            args.handler(engine, args)
        if sys.stdout is not None:
            with writing_output():
                sys.stdout.flush()  # a closed pipe fails here, not at interpreter exit
    except BrokenPipeError as exc:  # written by a command's own code, not write_output
        # The reader went away (`userstore users list | head`): the output is
        # incomplete, so fail, and stop Python's own flush at exit from failing again.
        _silence_stdout()
        error = OutputError("standard output was closed before all was written")
        error.__cause__ = exc
        return _failure(error)
    except OutputError as exc:
        _silence_stdout()
        return _failure(exc)
    except UserStoreError as exc:
        return _failure(exc)
    return EXIT_OK, None


def _failure(error: UserStoreError) -> tuple[int, str]:
    message = str(error)
    if isinstance(error, OutputError) and _INTERRUPTS.committed and "committed" not in message:
        message = f"the change was committed, but {message}"
    return _exit_code(error), message


def _occupy_closed_standard_descriptors() -> None:
    """Open /dev/null on a closed descriptor 0, 1 or 2 (``>&-``).

    Python leaves ``sys.stdout`` (or ``sys.stderr``) ``None`` then, and the
    command line writes nothing there; this keeps a database's file or socket
    from taking the number, where a driver's stray write to "stderr" would land.
    """
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            try:
                devnull = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if devnull != descriptor:
                os.dup2(devnull, descriptor)
                os.close(devnull)


def _print_error(message: str) -> None:
    """Print ``userstore: <message>`` on stderr; with stderr closed or full, drop it."""
    stream = sys.stderr
    if stream is None:  # closed (`2>&-`): print(file=None) would write to stdout
        return
    try:
        stream.write(f"userstore: {_one_line(message)}\n")
        stream.flush()
    except (OSError, ValueError):  # full (`2>/dev/full`): the exit status still tells
        return


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so Python's flush at exit has nowhere to fail."""
    stream = sys.stdout
    if stream is None:  # closed at start: its descriptor may be a database's now
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (replaced, as by a test)
        return
