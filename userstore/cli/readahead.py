"""Reading the next batch of an import while the current one is written.

While a batch is being written, the command mostly waits: on the database
server, or inside SQLite, with the GIL released. A thread reads and parses
the next batch meanwhile, so parsing costs little on top of writing. It runs
at most one batch ahead (memory stays flat), stops when asked, and hands
any error it meets to the reader, raised where the batch would have been.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Final, Generic, TypeVar

_T = TypeVar("_T")
_POLL_SECONDS: Final = 0.1


class _End:
    """The items ran out (or failed with ``error``)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class ReadAhead(Generic[_T]):
    """Iterates ``items`` on a thread of its own, one item ahead of the consumer.

    Args:
        items: What to read ahead. Its errors are raised by ``next()``.
        name: The thread's name.
    """

    def __init__(self, items: Iterator[_T], *, name: str) -> None:
        self._queue: queue.Queue[_T | _End] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._read, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _read(self, items: Iterator[_T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_End(exc))
            return
        self._put(_End())

    def _put(self, item: _T | _End) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[_T]:
        return self

    def __next__(self) -> _T:
        if self._ended:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _End):
            self._ended = True
            self._thread.join()
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop reading ahead and wait for the thread to end (idempotent)."""
        self._ended = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()  # frees a thread waiting to put
            except queue.Empty:
                self._thread.join(_POLL_SECONDS)

    def __enter__(self) -> ReadAhead[_T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
