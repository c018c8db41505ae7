"""The demo and the migration commands: demo, upgrade, downgrade, current, check."""

from __future__ import annotations

import argparse

from sqlalchemy import Engine

from userstore import migrations
from userstore.cli.app import AddCommand, emit, report
from userstore.demo import NOTEBOOK_URL, replay_notebook
from userstore.errors import ConfigurationError


def demo(engine: Engine, _args: argparse.Namespace) -> None:
    """Replay the seed notebook (the command line's default)."""
    replay_notebook(engine)


def check_demo_arguments(args: argparse.Namespace) -> None:
    """Refuse ``--json`` for the demo, whose output is a notebook's cells, not a document.

    Raises:
        ConfigurationError: ``--json`` was given (exit 2).
    """
    if args.json:
        raise ConfigurationError("the demo prints notebook cells; it has no --json output")


def _report_revision(engine: Engine, args: argparse.Namespace) -> None:
    revision = migrations.current(engine)
    report(engine, args, f"at revision {revision or '<none>'}", {"revision": revision})


def _upgrade(engine: Engine, args: argparse.Namespace) -> None:
    migrations.upgrade(engine, args.revision)
    _report_revision(engine, args)


def _downgrade(engine: Engine, args: argparse.Namespace) -> None:
    migrations.downgrade(engine, args.revision)
    _report_revision(engine, args)


def _current(engine: Engine, args: argparse.Namespace) -> None:
    revision = migrations.current(engine)
    emit(args, revision or "<none>", {"revision": revision}, answer=True)


def _check(engine: Engine, args: argparse.Namespace) -> None:
    migrations.check(engine)
    head = migrations.head()
    report(
        engine,
        args,
        f"schema matches the models at revision {head}",
        {"revision": head, "matches": True},
    )


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
        validate=check_demo_arguments,
        creates_database=True,
    )
    upgrade = add_command(
        "upgrade",
        "migrate the schema up (default: to head), creating a SQLite file that is missing",
        _upgrade,
        reached,
        needs_schema=False,
        creates_database=True,
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
