"""``userstore users ...``: look at and change one user at a time."""

from __future__ import annotations

from userstore.cli.app import AddCommand


def register(add_command: AddCommand) -> None:
    """Add the ``users`` command group to the command line."""
