"""The ``userstore`` command line: one function per command, one place for exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from userstore.demo import replay_notebook
from userstore.errors import UserStoreError


def _demo(args: argparse.Namespace) -> None:
    replay_notebook(args.url, echo=not args.quiet)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="userstore",
        description="Store users in SQLite, PostgreSQL or MariaDB.",
        epilog="The database is --url, else $USERSTORE_DATABASE_URL, else sqlite:///userstore.db.",
    )
    parser.add_argument("--url", help="database URL (default: see below)")
    parser.set_defaults(handler=_demo, quiet=False)
    commands = parser.add_subparsers(title="commands")
    demo = commands.add_parser("demo", help="replay the seed notebook through the repository")
    demo.add_argument("--quiet", action="store_true", help="do not echo SQL")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code.

    With no command, runs ``demo``.
    """
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except UserStoreError as exc:
        print(f"userstore: {exc}", file=sys.stderr)
        return 1
    return 0
