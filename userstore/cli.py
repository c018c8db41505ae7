"""The ``userstore`` command line: one function per command, one place for exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from userstore import migrations
from userstore.demo import replay_notebook
from userstore.errors import UserStoreError


def _demo(args: argparse.Namespace) -> None:
    replay_notebook(args.url, echo=not args.quiet)


def _upgrade(args: argparse.Namespace) -> None:
    migrations.upgrade(args.url, args.revision)
    print(f"at revision {migrations.current(args.url)}")


def _downgrade(args: argparse.Namespace) -> None:
    migrations.downgrade(args.url, args.revision)
    print(f"at revision {migrations.current(args.url) or '<none>'}")


def _current(args: argparse.Namespace) -> None:
    print(migrations.current(args.url) or "<none>")


def _check(args: argparse.Namespace) -> None:
    migrations.check(args.url)
    print(f"schema matches the models at revision {migrations.head()}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="userstore",
        description="Store users in SQLite, PostgreSQL or MariaDB.",
        epilog="The database is --url, else $USERSTORE_DATABASE_URL, else sqlite:///userstore.db.",
    )
    parser.add_argument("--url", help="database URL (default: see below)")
    parser.set_defaults(handler=_demo, quiet=False)
    commands = parser.add_subparsers(title="commands")
    demo = commands.add_parser("demo", help="replay the seed notebook (the default command)")
    demo.add_argument("--quiet", action="store_true", help="do not echo SQL")
    demo.set_defaults(handler=_demo)
    upgrade = commands.add_parser("upgrade", help="migrate the schema up (default: to head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=_upgrade)
    downgrade = commands.add_parser("downgrade", help="migrate the schema down to REVISION")
    downgrade.add_argument("revision", help='a revision id, "-1", or "base"')
    downgrade.set_defaults(handler=_downgrade)
    current = commands.add_parser("current", help="print the database's revision")
    current.set_defaults(handler=_current)
    check = commands.add_parser("check", help="fail unless the schema is at head and matches")
    check.set_defaults(handler=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code.

    With no command, runs ``demo``. A userstore error prints one line and
    exits with status 1.
    """
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except UserStoreError as exc:
        print(f"userstore: {exc}", file=sys.stderr)
        return 1
    return 0
