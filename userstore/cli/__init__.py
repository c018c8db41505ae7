"""The ``userstore`` command line (also ``python -m userstore``).

A call travels: :mod:`userstore.cli.app` parses the arguments, opens one
engine and maps every :class:`~userstore.errors.UserStoreError` to one line
and one exit code; each command group lives in its own module
(:mod:`~userstore.cli.schema`: the demo and migrations,
:mod:`~userstore.cli.users`: one user at a time,
:mod:`~userstore.cli.transfer`: import and export) and works through the
repository like any app.
"""

from userstore.cli.app import main

__all__ = ["main"]
