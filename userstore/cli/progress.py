"""The live progress bar of ``userstore import`` and ``export``, drawn by tqdm.

tqdm is the bar: pure Python with no dependencies of its own, maintained
since 2013 and among the most used progress bars for Python. It redraws at
most ten times a second however often it is told of progress, adapts to the
terminal's width, and erases itself when done. The command tells it once per
batch of rows, never per row, so the bar costs nothing measurable.

A bar is drawn only on a terminal: when standard error is a tty and
``--quiet`` was not given. Off a terminal nothing is drawn (tqdm is not even
started), so logs and pipes get the final summary alone.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import IO, Any, Final

from tqdm import tqdm  # type: ignore[import-untyped]

# Known total: the share done, and the time left at the current pace.
_WITH_TOTAL: Final = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
# Unknown total (a pipe): rows done and rows per second only.
_WITHOUT_TOTAL: Final = "{desc}: [{elapsed}{postfix}]"


def short_name(path: str, *, width: int = 30) -> str:
    """A file's name for the bar: its base name, cut in the middle to ``width`` characters.

    A full path would leave the bar no room on the line (tqdm cuts the line's
    end, where the rows and the rate are).
    """
    name = os.path.basename(path.rstrip("/")) or path
    if len(name) <= width:
        return name
    keep = width - 1
    return f"{name[: keep // 2]}…{name[-(keep - keep // 2) :]}"


def wanted(quiet: bool, stream: IO[str] | None = None) -> bool:
    """Whether to draw a bar: on a terminal (``stream``, default stderr), unless quiet."""
    stream = sys.stderr if stream is None else stream
    if quiet or stream is None:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """Rows done, rows per second, and with a known total a percentage and time left.

    Args:
        description: What is being done, shown first ("importing users.csv");
            keep it short (see :func:`short_name`).
        total: The amount of work in ``done`` units (bytes of the file, or
            rows), or ``None`` when unknown (a pipe).
        enabled: Draw the bar; when false every method does nothing.
        stream: Where to draw (default: standard error).
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        enabled: bool,
        stream: IO[str] | None = None,
    ) -> None:
        self._started = time.monotonic()
        self._bar: Any = None
        if not enabled:
            return
        self._bar = tqdm(
            desc=description,
            total=total,
            bar_format=_WITHOUT_TOTAL if total is None else _WITH_TOTAL,
            file=sys.stderr if stream is None else stream,
            dynamic_ncols=True,
            leave=False,  # the summary line that follows says it all
            smoothing=0.1,
        )
        self._bar.set_postfix_str("0 rows", refresh=True)

    def advance(self, rows: int, done: int | None = None) -> None:
        """Report progress: ``rows`` handled so far and ``done`` units of ``total``.

        Args:
            rows: Rows handled so far (cumulative).
            done: Work done so far in the total's units; default ``rows``.
        """
        bar = self._bar
        if bar is None:
            return
        elapsed = time.monotonic() - self._started
        rate = f", {rows / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        bar.set_postfix_str(f"{rows:,} rows{rate}", refresh=False)
        done = rows if done is None else done
        if bar.total is not None:
            done = min(done, bar.total)
        bar.update(done - bar.n)  # redraws only if a tenth of a second has passed

    def close(self) -> None:
        """Erase the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
