"""The two file formats of import and export, and writing users in them.

CSV: a ``name,number`` header, then one user per line; an empty number is
NULL. JSON Lines: one ``{"name": ..., "number": ...}`` object per line, the
number an integer or ``null``. Both are UTF-8 with ``\\n`` line ends when
written; reading (see :mod:`userstore.cli.reading`) also takes ``\\r\\n`` and a
byte-order mark.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO, Final, Literal, TypeAlias

from userstore.errors import ConfigurationError

Format: TypeAlias = Literal["csv", "jsonl"]
Pair: TypeAlias = tuple[str, int | None]

FORMATS: Final[tuple[Format, ...]] = ("csv", "jsonl")
EXTENSIONS: Final[dict[str, Format]] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
HEADER: Final = ("name", "number")
ENCODING: Final = "utf-8"
# Bytes that are not UTF-8 survive decoding as lone surrogates (and encoding
# back), so the row they are in is rejected naming its line, and a rejects
# file gets the very bytes back.
ERRORS: Final = "surrogateescape"
LINE_END: Final = "\n"
STDIO: Final = "-"
# How every error of an import that wrote nothing ends.
NOTHING_IMPORTED: Final = "nothing was imported"


def format_of(path: str, given: str | None) -> Format:
    """The format of ``path``: ``given`` (``--format``), else its extension.

    Raises:
        ConfigurationError: no ``--format`` for standard input or output, or
            an extension that says nothing.
    """
    if given is not None:
        return "csv" if given == "csv" else "jsonl"
    if path == STDIO:
        raise ConfigurationError("standard input and output need --format csv or --format jsonl")
    base = path.rsplit("/", 1)[-1]
    suffix = base[base.rfind(".") :].lower() if "." in base else ""
    if suffix not in EXTENSIONS:
        raise ConfigurationError(
            f"cannot tell the format of {path!r} from its extension "
            "(.csv, .jsonl or .ndjson): give --format csv or --format jsonl"
        )
    return EXTENSIONS[suffix]


class RowWriter:
    """Writes users to a text stream in one format, a page at a time.

    Args:
        stream: Where to write (text; the caller picks UTF-8 and no newline
            translation).
        fmt: The format; a CSV file's header is written at once.
    """

    def __init__(self, stream: IO[str], fmt: Format) -> None:
        self._stream = stream
        self._format = fmt
        if fmt == "csv":
            self._csv = csv.writer(stream, lineterminator=LINE_END)
            self._csv.writerow(HEADER)

    def write(self, pairs: Iterable[Pair]) -> None:
        """Write ``(name, number)`` pairs (``None``: an empty CSV field, JSON ``null``)."""
        if self._format == "csv":
            self._csv.writerows(pairs)  # the csv module writes None as an empty field
            return
        dumps = json.dumps
        page = "".join(
            f'{{"name": {dumps(name, ensure_ascii=False)}, '
            f'"number": {"null" if number is None else number}}}\n'
            for name, number in pairs
        )
        if "\u2028" in page or "\u2029" in page:
            # Valid JSON as they are, but line breaks to JavaScript and str.splitlines.
            page = page.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        self._stream.write(page)
