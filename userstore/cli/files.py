"""The files of import and export: reading one, and writing one that is never left half done.

A file that cannot be opened, read or written is a
:class:`~userstore.cli.app.FileAccessError` (exit 8), naming the file and the
system's reason. An output file is written under a temporary name in its
directory and renamed into place only once complete, so a failure or Ctrl-C
leaves no partial file behind and an existing file is never half
overwritten. Devices and pipes (``/dev/null``, a FIFO) are written in place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, NoReturn

from userstore.cli.app import FileAccessError, OutputError
from userstore.cli.formats import STDIO


def display_name(path: str, stdio: str) -> str:
    """How to name ``path`` in messages (``-`` is standard input or output)."""
    return stdio if path == STDIO else repr(path)


@dataclass
class InputFile:
    """A file being read, with what the progress bar and a re-scan need.

    Attributes:
        stream: The binary stream.
        name: How messages name it.
        size: Bytes to read, when known (a regular file); ``None`` for a pipe.
    """

    stream: IO[bytes]
    name: str
    size: int | None
    _start: int | None

    def position(self) -> int | None:
        """Bytes read so far (``None`` when unknown)."""
        if self._start is None:
            return None
        try:
            return os.lseek(self.stream.fileno(), 0, os.SEEK_CUR) - self._start
        except (OSError, ValueError):
            return None

    def rewind(self) -> bool:
        """Go back to the start, if the file allows it (a pipe does not)."""
        if self._start is None:
            return False
        try:
            self.stream.seek(self._start)
        except (OSError, ValueError):
            return False
        return True


@contextlib.contextmanager
def open_input(path: str) -> Iterator[InputFile]:
    """Open ``path`` (``-``: standard input) for reading, as bytes.

    Raises:
        FileAccessError: it cannot be opened.
    """
    if path == STDIO:
        if sys.stdin is None:  # started with it closed (<&-)
            raise FileAccessError("cannot read standard input: it is closed")
        stream = sys.stdin.buffer
        yield _input(stream, "standard input")
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise FileAccessError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        yield _input(stream, repr(path))
    finally:
        stream.close()


def _input(stream: IO[bytes], name: str) -> InputFile:
    try:
        status = os.fstat(stream.fileno())
        if not stat.S_ISREG(status.st_mode):
            return InputFile(stream, name, None, None)
        start = stream.tell()
    except (OSError, ValueError):  # no file descriptor, or not seekable
        return InputFile(stream, name, None, None)
    return InputFile(stream, name, max(status.st_size - start, 0), start)


def read_error(file: InputFile, exc: OSError) -> FileAccessError:
    """The error for a failed read of ``file``."""
    return FileAccessError(f"cannot read {file.name}: {exc.strerror or exc}")


class OutputFile:
    """Where an export (or a rejects file) goes, made final only by :meth:`commit`.

    Args:
        path: The file (``-``: standard output).
        force: Replace an existing regular file.
        what: What the file is, for messages ("the export", "the rejects file").

    Raises:
        FileAccessError: ``path`` exists and ``force`` is false, or its
            directory cannot be written.
    """

    def __init__(self, path: str, *, force: bool, what: str) -> None:
        self.path = path
        self.name = "standard output" if path == STDIO else repr(path)
        self._force = force
        self._temporary: str | None = None
        self.stream: IO[bytes]
        if path == STDIO:
            if sys.stdout is None:  # started with it closed (>&-)
                raise OutputError("standard output is closed")
            self.stream = sys.stdout.buffer
            return
        try:
            status = os.stat(path)
        except FileNotFoundError:
            status = None
        except OSError as exc:
            raise FileAccessError(f"cannot write {self.name}: {exc.strerror or exc}") from None
        if status is not None and not stat.S_ISREG(status.st_mode):
            if stat.S_ISDIR(status.st_mode):
                raise FileAccessError(f"cannot write {self.name}: it is a directory")
            self.stream = self._open(path, "wb")  # a device or a pipe: written in place
            return
        if status is not None and not force:
            raise FileAccessError(f"{what} {self.name} already exists; pass --force to replace it")
        directory, base = os.path.split(os.path.abspath(path))
        try:
            descriptor, self._temporary = tempfile.mkstemp(
                prefix=f".{base}.", suffix=".partial", dir=directory
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if os.path.isdir(directory):  # the file is there, or may be, yet no file can be made
                reason = (
                    f"it is written to a temporary file in {directory!r} first, then renamed, "
                    f"and that directory refuses a new file ({reason})"
                )
            raise FileAccessError(f"cannot write {self.name}: {reason}") from None
        self.stream = os.fdopen(descriptor, "wb")

    def restart(self) -> bool:
        """Throw away what was written, to write it again, if the file allows it.

        Only a regular file's temporary copy does: what went to a device, a
        pipe or standard output is out already.
        """
        if self._temporary is None:
            return False
        try:
            self.stream.seek(0)
            self.stream.truncate()
        except OSError:
            return False
        return True

    def _open(self, path: str, mode: str) -> IO[bytes]:
        try:
            return open(path, mode)
        except OSError as exc:
            raise FileAccessError(f"cannot write {self.name}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        """Make the file final: :meth:`finish`, then :meth:`publish`.

        Raises:
            FileAccessError: writing or renaming failed, or (without
                ``--force``) a file of that name appeared meanwhile.
        """
        self.finish()
        self.publish()

    def finish(self) -> None:
        """Put everything written on disk (flushed, and synced for a regular file).

        Raises:
            FileAccessError: writing failed; what was written is thrown away.
        """
        try:
            self.stream.flush()
            if self._temporary is not None:
                os.fsync(self.stream.fileno())
            if self.path != STDIO:
                self.stream.close()
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and self.path == STDIO:
                raise  # the command line's own handling of a closed stdout
            self._fail(exc)

    def publish(self) -> None:
        """Give a finished regular file its name (devices, pipes and stdout have it already).

        Raises:
            FileAccessError: renaming failed, or (without ``--force``) a file
                of that name appeared meanwhile.
        """
        if self._temporary is None:
            return
        try:
            os.chmod(self._temporary, _default_mode())
            if self._force:
                os.replace(self._temporary, self.path)
            else:
                _link_without_replacing(self._temporary, self.path, self.name)
        except OSError as exc:
            self._fail(exc)
        self._temporary = None

    def _fail(self, exc: OSError) -> NoReturn:
        self.discard()
        raise FileAccessError(f"cannot write {self.name}: {exc.strerror or exc}") from None

    def discard(self) -> None:
        """Throw away what was written (a regular file's temporary copy); idempotent."""
        if self.path != STDIO:
            with contextlib.suppress(OSError):
                self.stream.close()
        if self._temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temporary)
            self._temporary = None


def _link_without_replacing(source: str, target: str, name: str) -> None:
    """Move ``source`` to ``target`` unless ``target`` exists, atomically where links work."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise FileAccessError(
            f"{name} appeared while it was being written; pass --force to replace it"
        ) from None
    except OSError:  # no hard links on this file system: check, then rename
        if os.path.lexists(target):
            raise FileAccessError(
                f"{name} appeared while it was being written; pass --force to replace it"
            ) from None
        os.replace(source, target)
        return
    os.unlink(source)


def _default_mode() -> int:
    """The mode a new file gets from ``open()`` under this process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def output_file(path: str, *, force: bool, what: str) -> Iterator[OutputFile]:
    """An :class:`OutputFile` that is discarded unless committed inside the block."""
    output = OutputFile(path, force=force, what=what)
    try:
        yield output
    finally:
        output.discard()
