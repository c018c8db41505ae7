"""Reading users from CSV or JSON Lines, a batch of lines at a time, naming each line.

Built for speed on the path every valid file takes: a batch of lines is read
as bytes (one C call per line), checked and split with a few C-level passes
over the whole batch, decoded once, and handed on as ``(name, number)``
pairs for the repository's bulk calls to validate (validation is theirs, not
done twice). A batch with anything unusual in it (quotes, a blank line, a
malformed record, a number that is not a plain integer) is read again row by
row, by the ``csv`` module or ``json.loads``, to name the line at fault.

Lines end at ``\\n`` (a ``\\r`` before it belongs to the line end) and are
numbered from 1, as editors number them; a CSV file's header is line 1.
Bytes that are not UTF-8 are kept as lone surrogates (``surrogateescape``),
so the row they are in is rejected naming its line rather than the whole
file failing to decode.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import IO, Final

from userstore.cli.formats import ENCODING, ERRORS, HEADER, NOTHING_IMPORTED, Format, Pair
from userstore.errors import InvalidUserError
from userstore.validation import NUMBER_MAX, NUMBER_MIN, validate_name, validate_number

_BOM: Final = b"\xef\xbb\xbf"
# Every byte but the comma and the line feed: deleting them leaves a batch's separators.
_NOT_SEPARATORS: Final = bytes(byte for byte in range(256) if byte not in b",\n")
_ROW_SEPARATORS: Final = b",\n"
# A batch's numbers joined by newlines: each one empty or a plain decimal integer.
_NUMBERS: Final = re.compile(r"(?:-?[0-9]+)?(?:\n(?:-?[0-9]+)?)*")
_INTEGER: Final = re.compile(r"-?[0-9]+")
_MOST_DIGITS: Final = 18  # more than any storable number has, and int() always takes it
_NOT_UTF8: Final = re.compile("[\udc80-\udcff]")
_JSON_KEYS: Final = {"name": None, "number": None}.keys()
# A line (a CSV record's line, a JSON Lines object) is read up to this many
# bytes; a longer one is an invalid row, its rest skipped unread into memory.
# (A name is at most 255 characters: 1,020 bytes of UTF-8.)
MAX_LINE_BYTES: Final = 65_536
# What stands for a line that was too long, so the readers see a row there.
_TOO_LONG: Final = b"-\n"
_TOO_LONG_REASON: Final = f"the line is longer than {MAX_LINE_BYTES:,} bytes"
_QUOTED_PREFIX: Final = 200  # characters of a too-long line kept to quote it
# Lines read at once: at most this many pieces of long lines are held (8 MiB).
_PART_LINES: Final = 128
# JSON's names for Python's types, for messages.
_JSON_TYPES: Final = {
    "NoneType": "null",
    "bool": "true or false",
    "int": "a number",
    "float": "a number",
    "str": "a string",
    "list": "an array",
}
# The csv module's message for a carriage return alone, rephrased for people.
_CSV_MESSAGES: Final = {
    "new-line character seen in unquoted field - do you need to open the file in "
    "universal-newline mode?": "a carriage return (\\r) that does not end the line, outside quotes",
}
_CSV_FIELD_LIMIT: Final = re.compile(r"field larger than field limit \((\d+)\)")
_ESCAPED_SURROGATE: Final = re.compile(r"\\udc([89a-f][0-9a-f])")


@dataclass(frozen=True)
class Reject:
    """A row that was not imported.

    Attributes:
        line: Its (first) line in the file.
        reason: Why, for a person.
        record: The row as it was in the file, without its line end.
    """

    line: int
    reason: str
    record: str


@dataclass
class RowBatch:
    """Rows read from the file, in file order.

    Attributes:
        pairs: The rows that parsed, as ``(name, number)``; not validated yet
            (the repository's bulk calls do that).
        lines: The (first) line of each pair; ``None`` when they are
            ``first_line``, ``first_line + 1``, and so on.
        first_line: The line of the first pair.
        malformed: Rows that did not parse (bad CSV, bad JSON, a number that
            is not an integer), with the reason.
        rows: Data rows read: pairs and malformed ones (blank lines do not count).
        last_lines: The last line of each pair, when one spans lines (a quoted
            CSV field with a line break in it); ``None``: each is one line.
    """

    pairs: list[Pair]
    lines: list[int] | None
    first_line: int
    malformed: list[Reject] = field(default_factory=list)
    rows: int = 0
    last_lines: list[int] | None = None

    def line(self, index: int) -> int:
        """The (first) line of ``pairs[index]``."""
        return self.first_line + index if self.lines is None else self.lines[index]

    def last_line(self, index: int) -> int:
        """The last line of ``pairs[index]``."""
        return self.line(index) if self.last_lines is None else self.last_lines[index]


def decode(line: bytes) -> str:
    """A line's text (its line end kept)."""
    return line.decode(ENCODING, ERRORS)


def capped_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """``stream``'s lines, each read up to :data:`MAX_LINE_BYTES` (a longer one comes in pieces).

    ``iter()`` on a bound ``readline`` keeps the loop in C: as fast as
    iterating the file, without ever holding more than a piece of a line.
    """
    return iter(functools.partial(stream.readline, MAX_LINE_BYTES), b"")


class LineBook:
    """A file's lines, read a batch at a time; the last few batches are kept to quote rejects.

    At most ``keep`` batches are kept, so memory stays flat; a line older than
    that is no longer quoted. Enough are kept for a reader running a batch
    or two ahead (:mod:`userstore.cli.readahead`) to leave the batch being
    written quotable; a lock keeps that reader and the quoting apart.

    A line longer than :data:`MAX_LINE_BYTES` (``source`` gives it in pieces,
    see :func:`capped_lines`) is skipped without being held: a placeholder
    stands in its place, and :meth:`too_long` names it.
    """

    def __init__(self, source: Iterable[bytes], batch_size: int, keep: int = 5) -> None:
        self._source: Iterator[bytes] = iter(source)
        self._batch_size = batch_size
        self._batches: deque[tuple[int, list[bytes]]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._next_line = 1
        self._too_long: dict[int, str] = {}  # line -> its first characters

    def stream(self) -> Iterator[bytes]:
        """Every line, read a batch at a time (C speed for whoever iterates)."""
        return chain.from_iterable(self.batches())

    def batches(self) -> Iterator[list[bytes]]:
        """The lines, ``batch_size`` at a time."""
        while batch := self._read_batch():
            with self._lock:
                self._batches.append((self._next_line, batch))
                oldest = self._batches[0][0]
                for line in [line for line in self._too_long if line < oldest]:
                    del self._too_long[line]
            self._next_line += len(batch)
            yield batch

    def _read_batch(self) -> list[bytes]:
        """The next ``batch_size`` lines, read a few at a time so that pieces of long lines
        are dropped before many are held."""
        batch: list[bytes] = []
        while len(batch) < self._batch_size:
            part = list(islice(self._source, min(_PART_LINES, self._batch_size - len(batch))))
            if not part:
                break
            if max(map(len, part)) >= MAX_LINE_BYTES:
                part = self._without_long_lines(part, self._next_line + len(batch))
            batch += part
        return batch

    def _without_long_lines(self, pieces: list[bytes], first_line: int) -> list[bytes]:
        """``pieces`` with each line too long replaced by :data:`_TOO_LONG` (read to its end)."""
        lines: list[bytes] = []
        skipping = False
        for piece in chain(pieces, self._rest_of_a_long_line(pieces)):
            if skipping:
                skipping = not piece.endswith(b"\n")
                continue
            if len(piece) >= MAX_LINE_BYTES and not piece.endswith(b"\n"):
                line = first_line + len(lines)
                self._too_long[line] = decode(piece[: _QUOTED_PREFIX * 4])[:_QUOTED_PREFIX]
                lines.append(_TOO_LONG)
                skipping = True
                continue
            lines.append(piece)
        return lines

    def _rest_of_a_long_line(self, pieces: list[bytes]) -> Iterator[bytes]:
        """The pieces after ``pieces`` up to the end of the line they end in, if unfinished."""
        last = pieces[-1]
        if len(last) < MAX_LINE_BYTES or last.endswith(b"\n"):
            return
        for piece in self._source:
            yield piece
            if piece.endswith(b"\n"):
                return

    def too_long(self, first: int, last: int) -> int | None:
        """The first line from ``first`` to ``last`` that was too long, if any."""
        with self._lock:
            found = [line for line in self._too_long if first <= line <= last]
        return min(found) if found else None

    def text(self, first: int, last: int) -> str:
        """Lines ``first`` to ``last`` as read, without the last one's line end."""
        with self._lock:
            kept = list(self._batches)
            cut = dict(self._too_long)
        parts = []
        for line in range(first, last + 1):
            if line in cut:
                parts.append((cut[line] + "…").encode(ENCODING, ERRORS))
                continue
            for start, batch in kept:
                if start <= line < start + len(batch):
                    parts.append(batch[line - start])
                    break
        text = decode(b"".join(parts)).removesuffix("\n").removesuffix("\r")
        return text.removeprefix("\ufeff") if first == 1 else text


class RowReader(ABC):
    """Reads a file of users a batch at a time; made by :func:`row_reader`."""

    _book: LineBook

    @abstractmethod
    def batches(self) -> Iterator[RowBatch]:
        """Yield the file's rows, about ``batch_size`` at a time, in file order.

        Raises:
            InvalidUserError: the file cannot be read as this format at all
                (a CSV file without its header).
            OSError: reading failed.
        """

    def record(self, batch: RowBatch, index: int) -> str:
        """The text of ``batch.pairs[index]`` as it was in the file."""
        return self._book.text(batch.line(index), batch.last_line(index))


def row_reader(stream: IO[bytes], fmt: Format, batch_size: int) -> RowReader:
    """A reader of ``stream`` (binary) in ``fmt``, ``batch_size`` lines per batch."""
    if fmt == "csv":
        return _CsvReader(stream, batch_size)
    return _JsonLinesReader(stream, batch_size)


def problem_in(name: object, number: object) -> str | None:
    """Why ``(name, number)`` cannot be stored, or ``None``: the repository's own rules.

    Used only to name the row at fault once the repository refused a batch,
    and by ``--skip-invalid`` to sort a refused batch's rows.
    """
    if isinstance(name, str) and _NOT_UTF8.search(name) is not None:
        return "name is not valid UTF-8"
    try:
        validate_name(name)
        validate_number(number)
    except InvalidUserError as exc:
        return str(exc)
    return None


# -- CSV -----------------------------------------------------------------------------


class _CsvReader(RowReader):
    def __init__(self, stream: IO[bytes], batch_size: int) -> None:
        self._batch_size = batch_size
        self._book = LineBook(capped_lines(stream), batch_size)
        self._lines = self._book.stream()
        self._next_line = 1

    def batches(self) -> Iterator[RowBatch]:
        self._read_header()
        while lines := list(islice(self._lines, self._batch_size)):
            first_line = self._next_line
            batch = _plain_csv_batch(lines, first_line)
            if batch is None:
                yield self._batch_row_by_row(lines, first_line)
            else:
                self._next_line += len(lines)
                yield batch

    def _read_header(self) -> None:
        first = next(self._lines, None)
        if first is None:
            raise InvalidUserError(
                f'line 1: the file is empty; a CSV import starts "name,number"; {NOTHING_IMPORTED}'
            )
        reader = csv.reader(chain([decode(first.removeprefix(_BOM))], map(decode, self._lines)))
        try:
            header = next(reader)
        except csv.Error as exc:
            raise InvalidUserError(
                f"line 1: malformed CSV header: {_csv_message(exc)}; {NOTHING_IMPORTED}"
            ) from None
        if self._book.too_long(1, reader.line_num) is not None:
            raise InvalidUserError(f"line 1: {_TOO_LONG_REASON}; {NOTHING_IMPORTED}")
        if tuple(header) != HEADER:
            shown = shown_text(self._book.text(1, reader.line_num))
            raise InvalidUserError(
                f'line 1: the CSV header must be "name,number", got {shown}; {NOTHING_IMPORTED}'
            )
        self._next_line = reader.line_num + 1

    def _batch_row_by_row(self, lines: list[bytes], first_line: int) -> RowBatch:
        """The batch read by the csv module, record by record, each with its lines.

        A quoted field may run past the batch's last line: the rest of its
        record is read from the file.
        """
        reader = csv.reader(map(decode, chain(lines, self._lines)), strict=True)
        pairs: list[Pair] = []
        starts: list[int] = []
        ends: list[int] = []
        malformed: list[Reject] = []
        count = 0
        last = first_line - 1  # the last line of the previous record
        while reader.line_num < len(lines):
            first = last + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                last = first_line - 1 + reader.line_num
                count += 1
                reason = f"malformed CSV: {_csv_message(exc)}"
                if self._book.too_long(first, last) is not None:
                    reason = _TOO_LONG_REASON
                malformed.append(Reject(first, reason, self._book.text(first, last)))
                continue
            last = first_line - 1 + reader.line_num
            if not row:
                continue  # a blank line
            count += 1
            if self._book.too_long(first, last) is not None:
                malformed.append(Reject(first, _TOO_LONG_REASON, self._book.text(first, last)))
                continue
            try:
                pairs.append(_csv_pair(row))
            except InvalidUserError as exc:
                malformed.append(Reject(first, str(exc), self._book.text(first, last)))
                continue
            starts.append(first)
            ends.append(last)
        self._next_line = last + 1
        first_pair = starts[0] if starts else first_line
        return RowBatch(pairs, starts, first_pair, malformed, count, ends)


def _plain_csv_batch(lines: list[bytes], first_line: int) -> RowBatch | None:
    """The batch as pairs, read with a few C-level passes, if it is plain.

    Plain: no quotes, no carriage return but before a line feed, exactly one
    comma on each line, and every number empty or ``-?[0-9]+``. Splitting on
    commas and line ends then reads exactly what the csv module would,
    without a list per row. (UTF-8 never uses the bytes of ``,`` or ``\\n``
    inside a character, so the bytes can be checked before decoding.)
    Anything else returns None, for the csv module to read.
    """
    joined = b"".join(lines)
    if b'"' in joined:
        return None
    if b"\r" in joined:
        joined = joined.replace(b"\r\n", b"\n")
        if b"\r" in joined:
            return None
    if not joined.endswith(b"\n"):
        joined += b"\n"  # the file's last line
    if joined.translate(None, _NOT_SEPARATORS) != _ROW_SEPARATORS * len(lines):
        return None  # a blank line, a row of one field or of three
    fields = decode(joined).replace(",", "\n").split("\n")
    texts = fields[1:-1:2]
    numbers = _plain_numbers(texts)
    if numbers is None:
        return None
    pairs = list(zip(fields[0:-1:2], numbers, strict=True))
    return RowBatch(pairs, None, first_line, rows=len(lines))


def _plain_numbers(texts: list[str]) -> list[int | None] | None:
    """The numbers, if each text is empty or ``-?[0-9]+``, checked a batch at a time.

    ``int()`` alone would also take spaces, ``+``, ``_`` and other scripts' digits.
    """
    joined = "".join(texts)
    if "-" in joined:
        if _NUMBERS.fullmatch("\n".join(texts)) is None:
            return None
    elif not joined.isascii() or not (joined.isdigit() or not joined):
        return None
    try:
        if "" in texts:
            return [int(text) if text else None for text in texts]
        return list(map(int, texts))
    except ValueError:  # thousands of digits: int() refuses them
        return None


def _csv_pair(row: list[str]) -> Pair:
    if len(row) != 2:
        raise InvalidUserError(f"expected 2 fields (name,number), got {len(row)}")
    return row[0], _number(row[1])


def _number(text: str) -> int | None:
    """A CSV number field: empty is NULL, else a plain decimal integer.

    Raises:
        InvalidUserError: anything else (spaces, signs other than a leading
            minus, decimals, digits of other scripts); the range is left to
            the repository's validation.
    """
    if not text:
        return None
    if _INTEGER.fullmatch(text) is None:
        raise InvalidUserError(f"number must be an integer or empty, got {shown_text(text, 40)}")
    return _whole_number(text)


def _whole_number(text: str) -> int:
    """``-?[0-9]+`` as an int, leading zeros allowed; one too long to be stored is refused.

    Checked before ``int()``, which refuses thousands of digits with a message about Python.

    Raises:
        InvalidUserError: out of the range a number may have.
    """
    if len(text.lstrip("-").lstrip("0")) > _MOST_DIGITS:
        shown = text if len(text) <= 40 else f"{text[:40]}… ({len(text):,} characters)"
        raise InvalidUserError(f"number must be between {NUMBER_MIN} and {NUMBER_MAX}, got {shown}")
    return int(text)


def _csv_message(error: csv.Error) -> str:
    message = str(error)
    limit = _CSV_FIELD_LIMIT.fullmatch(message)
    if limit is not None:
        return f"a field is longer than {int(limit.group(1)):,} characters"
    return _CSV_MESSAGES.get(message, message)


def shown_text(text: str, width: int | None = None) -> str:
    """``text`` quoted for a message: bytes that are not UTF-8 shown as ``\\xNN``, and said.

    Args:
        text: Decoded with ``surrogateescape``.
        width: Cut the text to this many characters (``None``: whole).
    """
    shown = repr(text if width is None else text[:width])
    if _NOT_UTF8.search(text) is None:
        return shown
    escaped = _ESCAPED_SURROGATE.sub(r"\\x\1", shown)
    return f"{escaped} (not UTF-8)"


# -- JSON Lines ----------------------------------------------------------------------


class _JsonLinesReader(RowReader):
    def __init__(self, stream: IO[bytes], batch_size: int) -> None:
        self._book = LineBook(capped_lines(stream), batch_size)

    def batches(self) -> Iterator[RowBatch]:
        line = 1
        for lines in self._book.batches():
            if line == 1 and lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM) :]
            batch = _plain_json_batch(lines, line)
            yield batch if batch is not None else self._batch_row_by_row(lines, line)
            line += len(lines)

    def _batch_row_by_row(self, lines: list[bytes], first_line: int) -> RowBatch:
        pairs: list[Pair] = []
        starts: list[int] = []
        malformed: list[Reject] = []
        count = 0
        for offset, raw in enumerate(lines):
            line = first_line + offset
            if not raw.strip():
                continue  # a blank line
            count += 1
            if self._book.too_long(line, line) is not None:
                malformed.append(Reject(line, _TOO_LONG_REASON, self._book.text(line, line)))
                continue
            try:
                pairs.append(_json_pair(raw))
            except InvalidUserError as exc:
                malformed.append(Reject(line, str(exc), self._book.text(line, line)))
                continue
            starts.append(line)
        first_pair = starts[0] if starts else first_line
        return RowBatch(pairs, starts, first_pair, malformed, count)


def _plain_json_batch(lines: list[bytes], first_line: int) -> RowBatch | None:
    """The batch as pairs, if every line is an object with exactly ``name`` and ``number``.

    A key may not repeat (``json.loads`` would keep its last value). Without
    a backslash in the batch, a key is spelled as it is, so each line has
    ``"name"`` and ``"number"`` once exactly when the batch has each as many
    times as lines (more: a repeat, or a name spelled so; the batch is read
    again line by line). With a backslash, each object's keys are checked.
    """
    joined = b"".join(lines)
    loads: Callable[[bytes], object]
    if b"\\" in joined:
        loads = functools.partial(json.loads, object_pairs_hook=_object_without_repeats)
    else:
        count = len(lines)
        if joined.count(b'"name"') != count or joined.count(b'"number"') != count:
            return None
        loads = json.loads
    pairs: list[Pair] = []
    append = pairs.append
    try:
        for line in lines:
            user = loads(line)
            if type(user) is not dict or user.keys() != _JSON_KEYS:
                return None
            append((user["name"], user["number"]))
    except ValueError:  # not JSON, not UTF-8, a repeated key, a huge integer
        return None
    return RowBatch(pairs, None, first_line, rows=len(lines))


def _object_without_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object as a dict, refusing a key that repeats."""
    user = dict(pairs)
    if len(user) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidUserError(f"the key {shown_text(key, 40)} repeats in the object")
            seen.add(key)
    return user


def _json_integer(text: str) -> int:
    """A JSON integer, refused before ``int()`` if too long to be a number."""
    return _whole_number(text)


def _json_pair(raw: bytes) -> Pair:
    try:
        user = json.loads(raw, object_pairs_hook=_object_without_repeats, parse_int=_json_integer)
    except InvalidUserError:
        raise
    except UnicodeDecodeError:
        raise InvalidUserError("not valid UTF-8") from None
    except ValueError as exc:
        raise InvalidUserError(f"not valid JSON: {exc}") from None
    if not isinstance(user, dict):
        kind = _JSON_TYPES.get(type(user).__name__, type(user).__name__)
        raise InvalidUserError(f'expected a JSON object {{"name": ..., "number": ...}}, got {kind}')
    unexpected = sorted(set(user) - {"name", "number"})
    if unexpected:
        keys = ", ".join(shown_text(key, 40) for key in unexpected)
        raise InvalidUserError(f"unexpected keys {keys}")
    if "name" not in user:
        raise InvalidUserError('the object has no "name"')
    return user["name"], user.get("number")
