"""``userstore users ...``: look at and change one user at a time.

Each command is one unit of work through :class:`~userstore.UserRepository`,
committed before it reports. Its arguments are checked before any engine is
built (:func:`check_arguments`), so a bad name or number sends no SQL.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from typing import Final

from sqlalchemy import Engine

from userstore.cli.app import (
    AddCommand,
    OutputError,
    check_interrupted,
    committing,
    emit,
    iso_utc,
    json_text,
    report,
    writing_output,
)
from userstore.engine import create_session_factory
from userstore.errors import ConfigurationError, InvalidUserError
from userstore.models import User
from userstore.repository import UserRepository
from userstore.validation import validate_limit, validate_name, validate_number

# Rows per query while listing: the page in hand is all that is held.
PAGE_SIZE: Final = 1000
# What a number looks like on the command line: ASCII digits with an optional
# minus sign. int() would also take "+5", " 5", "1_000" and other scripts' digits.
_INTEGER: Final = re.compile(r"-?[0-9]+")
_NUMBER_WIDTH: Final = len(str(-(2**31)))
_NO_NUMBER: Final = "-"
# Format characters that join what is around them rather than move or break it:
# zero-width (non-)joiner, and the tags of a flag emoji.
_JOINERS: Final = frozenset(["\u200c", "\u200d", *map(chr, range(0xE0020, 0xE0080))])


def parse_number(
    text: str, *, field: str = "number", like: str = "an integer like 42 or -7"
) -> int:
    """Read a command-line integer strictly: ``-?[0-9]+``, nothing else.

    Leading zeros are read as decimal and do not count towards its size.

    Args:
        text: The argument as given.
        field: What it is, for the message.
        like: What it should look like, for the message.

    Raises:
        InvalidUserError: ``text`` is not such an integer.
    """
    if not _INTEGER.fullmatch(text):
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise InvalidUserError(f"{field} must be {like}, got {shown!r}")
    sign = "-" if text.startswith("-") else ""
    digits = text.removeprefix("-").lstrip("0") or "0"
    if len(digits) > 20:  # far outside every range; int() of thousands of digits is refused
        raise InvalidUserError(f"{field} is out of range, got {len(digits)} digits")
    return int(sign + digits)


def check_arguments(args: argparse.Namespace) -> None:
    """Check a users command's arguments and turn them into values, before any SQL.

    Raises:
        InvalidUserError: a name, number or limit is invalid (exit 7).
        ConfigurationError: both a NUMBER and ``--no-number``, or ``users set``
            with neither (a usage error: exit 2).
    """
    if getattr(args, "name", None) is not None:
        validate_name(args.name)
    if getattr(args, "after", None) is not None:
        validate_name(args.after, field="--after")
    if getattr(args, "limit", None) is not None:
        args.limit = validate_limit(
            parse_number(args.limit, field="--limit", like="a whole number like 0 or 100")
        )
    if "number" in args:
        see = f"(see: {args.command_prog} --help)"
        if args.number is not None and args.no_number:
            raise ConfigurationError(f"give a NUMBER or --no-number, not both {see}")
        if args.number is None and args.requires_number and not args.no_number:
            raise ConfigurationError(f"give a NUMBER, or --no-number to store none {see}")
        if args.number is not None:
            args.number = validate_number(parse_number(args.number))


def user_document(user: User) -> dict[str, object]:
    """A user for ``--json``: name, number, and its timestamps in ISO 8601 UTC."""
    return {
        "name": user.name,
        "number": user.number,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def shown_name(name: str) -> str:
    """A name in output for people: verbatim if printable, else quoted with escapes.

    A printable name (spaces, quotes, non-ASCII, emoji) is shown as it is. One
    with a character ``str.isprintable`` refuses (a line or paragraph
    separator, a right-to-left override, a no-break or zero-width space) is
    shown as the confirmations show every name, a Python string literal
    (``'a\\u2028b'``), so it cannot break a line or reorder what follows it.
    The invisible characters that build emoji and scripts' letters (zero-width
    joiners, the tags of a flag) count as printable.
    """
    if name.isprintable() or all(char.isprintable() or char in _JOINERS for char in name):
        return name
    return repr(name)


def _number_text(number: int | None) -> str:
    return _NO_NUMBER if number is None else str(number)


def _with_number(number: int | None) -> str:
    return "no number" if number is None else f"number {number}"


def _add(engine: Engine, args: argparse.Namespace) -> None:
    with create_session_factory(engine)() as session:
        repo = UserRepository(session)
        user = repo.add(User(name=args.name, number=args.number))
        with committing():
            repo.commit()
    report(engine, args, f"added {user.name!r} ({_with_number(user.number)})", user_document(user))


def _get(engine: Engine, args: argparse.Namespace) -> None:
    with create_session_factory(engine)() as session:
        user = UserRepository(session).get_one(args.name)
    human = "\n".join(
        [
            f"name     {shown_name(user.name)}",
            f"number   {_number_text(user.number)}",
            f"created  {iso_utc(user.created_at)}",
            f"updated  {iso_utc(user.updated_at)}",
        ]
    )
    emit(args, human, user_document(user), answer=True)


def _set(engine: Engine, args: argparse.Namespace) -> None:
    with create_session_factory(engine)() as session:
        repo = UserRepository(session)
        result = repo.upsert_many([(args.name, args.number)])
        user = repo.get_one(args.name)
        with committing():
            repo.commit()
    name, number = repr(user.name), user.number
    if result.inserted:
        outcome, message = "inserted", f"added {name} ({_with_number(number)})"
    elif result.updated:
        outcome = "updated"
        message = f"set {name} to {_with_number(number)}"
    else:
        outcome, message = "unchanged", f"{name} already has {_with_number(number)}"
    report(engine, args, message, {**user_document(user), "outcome": outcome})


def _delete(engine: Engine, args: argparse.Namespace) -> None:
    with create_session_factory(engine)() as session:
        repo = UserRepository(session)
        repo.delete(args.name)
        with committing():
            repo.commit()
    report(engine, args, f"deleted {args.name!r}", {"name": args.name, "deleted": True})


def _count(engine: Engine, args: argparse.Namespace) -> None:
    with create_session_factory(engine)() as session:
        count = UserRepository(session).count()
    emit(args, str(count), {"count": count}, answer=True)


def listed_users(repo: UserRepository, after: str | None, limit: int | None) -> Iterator[User]:
    """Users in name order after ``after``, at most ``limit``, one page in memory at a time."""
    remaining = limit
    while remaining is None or remaining > 0:
        check_interrupted()  # a Ctrl-C Python dropped (raised in a GC callback) stops it here
        page_size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
        page = repo.list(after=after, limit=page_size)
        yield from page
        if len(page) < page_size:
            return
        after = page[-1].name
        if remaining is not None:
            remaining -= len(page)
        del page


def _list(engine: Engine, args: argparse.Namespace) -> None:
    # Streamed whatever the output: a million users never sit in memory at once.
    with create_session_factory(engine)() as session, writing_output():
        stream = sys.stdout
        if stream is None:  # closed (`>&-`): fail before reading a row
            raise OutputError("standard output is closed")
        write = stream.write
        users = listed_users(UserRepository(session), args.after, args.limit)
        if args.json:
            separator = "[\n"
            for user in users:
                write(f"{separator}{json_text(user_document(user))}")
                separator = ",\n"
            write("[]\n" if separator == "[\n" else "\n]\n")
            return
        write(f"{'NUMBER':>{_NUMBER_WIDTH}}  NAME\n")
        for user in users:
            write(f"{_number_text(user.number):>{_NUMBER_WIDTH}}  {shown_name(user.name)}\n")


_NAME_HELP: Final = "the user's name, verbatim (one starting with '-' goes after --)"


def register(add_command: AddCommand) -> None:
    """Add the ``users`` command group to the command line."""
    users = add_command.group("users", "look at and change users, one at a time")
    confirm = "print nothing on success"
    answer = "no effect: it prints only the answer"

    def command(
        name: str, help_text: str, handler: Callable[[Engine, argparse.Namespace], None], quiet: str
    ) -> argparse.ArgumentParser:
        return users(name, help_text, handler, quiet, validate=check_arguments)

    def number_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
        parser.add_argument(
            "number",
            nargs="?",
            default=None,
            metavar="NUMBER",
            help="an integer from -2147483648 to 2147483647"
            + ("" if required else " (default: none)"),
        )
        parser.add_argument("--no-number", action="store_true", help="store no number (NULL)")
        parser.set_defaults(requires_number=required, command_prog=parser.prog)

    add = command("add", "add a new user (exit 6 if the name is taken)", _add, confirm)
    add.add_argument("name", metavar="NAME", help=_NAME_HELP)
    number_arguments(add, required=False)

    get = command("get", "show one user (exit 5 if there is none)", _get, answer)
    get.add_argument("name", metavar="NAME", help=_NAME_HELP)

    listing = command("list", "list users in name (code-point) order, streamed", _list, answer)
    listing.add_argument(
        "--after", metavar="NAME", help="only names after this one (the next page)"
    )
    listing.add_argument("--limit", metavar="N", help="at most N users (default: all)")

    delete = command("delete", "delete a user (exit 5 if there is none)", _delete, confirm)
    delete.add_argument("name", metavar="NAME", help=_NAME_HELP)

    command("count", "print how many users there are", _count, answer)

    upsert = command(
        "set", "set a user's number, adding the user if there is none (an upsert)", _set, confirm
    )
    upsert.add_argument("name", metavar="NAME", help=_NAME_HELP)
    number_arguments(upsert, required=True)
    upsert.usage = (
        "%(prog)s [-h] [--url URL] [--transaction-pooling] [--quiet] [--json] "
        "NAME (NUMBER | --no-number)"
    )
