"""The ``userstore`` command line (also ``python -m userstore``).

A call travels: :mod:`userstore.cli.app` parses the arguments, opens one
engine and maps every :class:`~userstore.errors.UserStoreError` to one line
and one exit code; each command group lives in its own module
(:mod:`~userstore.cli.schema`: the demo and migrations,
:mod:`~userstore.cli.users`: one user at a time,
:mod:`~userstore.cli.transfer`: import and export) and works through the
repository like any app.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code (see :func:`userstore.cli.app.main`).

    The command line's modules (Alembic among them) are imported here, so a
    Ctrl-C while they load ends with one line and status 130 too, not a traceback.
    """
    try:
        from userstore.cli import app
    except KeyboardInterrupt:
        print("userstore: interrupted before the command started", file=sys.stderr)
        return _INTERRUPTED
    return app.main(argv)
