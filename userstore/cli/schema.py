"""The demo and the migration commands: demo, upgrade, downgrade, current, check."""

from __future__ import annotations

import argparse

from sqlalchemy import Engine

from userstore import migrations
from userstore.cli.app import AddCommand, report
from userstore.demo import NOTEBOOK_URL, replay_notebook


def demo(engine: Engine, _args: argparse.Namespace) -> None:
    """Replay the seed notebook (the command line's default)."""
    replay_notebook(engine)


def _upgrade(engine: Engine, args: argparse.Namespace) -> None:
    migrations.upgrade(engine, args.revision)
    report(engine, args, f"at revision {migrations.current(engine) or '<none>'}")


def _downgrade(engine: Engine, args: argparse.Namespace) -> None:
    migrations.downgrade(engine, args.revision)
    report(engine, args, f"at revision {migrations.current(engine) or '<none>'}")


def _current(engine: Engine, _args: argparse.Namespace) -> None:
    print(migrations.current(engine) or "<none>")  # the answer: printed even with --quiet


def _check(engine: Engine, args: argparse.Namespace) -> None:
    migrations.check(engine)
    report(engine, args, f"schema matches the models at revision {migrations.head()}")


def register(add_command: AddCommand) -> None:
    """Add the demo and the migration commands to the command line."""
    reached = "do not report the revision reached"
    add_command(
        "demo",
        f"replay the seed notebook (on {NOTEBOOK_URL} without --url)",
        demo,
        "do not echo SQL",
        default_url=NOTEBOOK_URL,
        echo_sql=True,
        needs_schema=False,
    )
    upgrade = add_command(
        "upgrade", "migrate the schema up (default: to head)", _upgrade, reached, needs_schema=False
    )
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = add_command(
        "downgrade", "migrate the schema down to REVISION", _downgrade, reached, needs_schema=False
    )
    downgrade.add_argument("revision", help='a revision id, "-1", or "base"')
    add_command(
        "current",
        "print the database's revision",
        _current,
        "no effect: it prints only that",
        needs_schema=False,
    )
    add_command(
        "check",
        "fail unless the schema is at head and matches the models",
        _check,
        "print nothing when it matches",
        needs_schema=False,
    )
