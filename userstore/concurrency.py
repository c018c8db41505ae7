"""Where the sync code runs: inside SQLAlchemy's greenlet bridge (an async engine) or not."""

from __future__ import annotations

import traceback

from sqlalchemy.util import concurrency


def in_greenlet() -> bool:
    """Whether this code runs under ``greenlet_spawn``, where an async driver can be awaited."""
    check = getattr(concurrency, "in_greenlet", None)
    return bool(check()) if check is not None else False


def release_frames(error: BaseException) -> None:
    """Drop the locals of the finished frames an interruption's traceback holds.

    A task cancelled mid-statement keeps its ``CancelledError``, and with it
    every frame it passed through, cursors included. An async SQLite
    connection that SQLAlchemy closed after the cancellation cannot finish
    closing while such a cursor lives: it would keep its transaction, and the
    database's write lock, until the garbage collector found the cycle.
    """
    seen: BaseException | None = error
    for _ in range(10):  # a short chain; never loop on a cycle
        if seen is None:
            return
        if seen.__traceback__ is not None:
            traceback.clear_frames(seen.__traceback__)
        seen = seen.__context__
