"""``userstore import`` and ``userstore export``: users in and out as CSV or JSON Lines."""

from __future__ import annotations

from userstore.cli.app import AddCommand


def register(add_command: AddCommand) -> None:
    """Add ``import`` and ``export`` to the command line."""
