"""What happens when the app's logging or tracing raises: userstore tells, and carries on.

A handler's ``emit()``, a logger's filter, a formatter or a span processor is
the app's code, run inside a repository call. Whatever it raises must not
change the call's outcome (its result, or its own error), so userstore
catches it and, as :meth:`logging.Handler.handleError` does, prints its
traceback to stderr while :data:`logging.raiseExceptions` is true (its
default); nothing otherwise.
"""

from __future__ import annotations

import logging
import sys
import traceback


def report(what: str) -> None:
    """Print the exception being handled, raised by the app's ``what``, to stderr; never raise.

    Call it from an ``except`` block.
    """
    if not logging.raiseExceptions:
        return
    stream = sys.stderr
    if stream is None:  # pythonw: nowhere to write
        return
    try:
        stream.write(f"--- userstore: {what} raised; the call's outcome is unchanged ---\n")
        # Without the chain: its context is the call's own error, which the app gets anyway.
        traceback.print_exception(sys.exc_info()[1], chain=False, file=stream)
        stream.flush()
    except (OSError, ValueError):  # stderr closed or broken: as handleError, say nothing more
        return
