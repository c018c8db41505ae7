"""``userstore import`` and ``userstore export``: users in and out as CSV or JSON Lines.

An import is one unit of work: rows stream from the file in batches through
``add_many`` (``--mode insert``) or ``upsert_many`` (``--mode upsert``) and
are committed once, at the end, so memory stays flat for any file size and a
failed import writes nothing. An export streams ``iter_all`` into a file that
takes its name only once complete. See README.md, "Import and export".
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import io
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from operator import itemgetter
from types import FrameType
from typing import IO, Final

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from userstore.bulk import validated_batches
from userstore.cli import files, progress
from userstore.cli.app import (
    EXIT_TERMINATED,
    AddCommand,
    FileAccessError,
    OutputError,
    check_interrupted,
    committing,
    emit,
)
from userstore.cli.formats import (
    ENCODING,
    ERRORS,
    FORMATS,
    LINE_END,
    NOTHING_IMPORTED,
    STDIO,
    Format,
    Pair,
    RowWriter,
    format_of,
)
from userstore.cli.readahead import ReadAhead
from userstore.cli.reading import Reject, RowBatch, RowReader, problem_in, row_reader
from userstore.engine import create_session_factory
from userstore.errors import ConfigurationError, DuplicateUserError, InvalidUserError
from userstore.models import User
from userstore.repository import UserRepository
from userstore.sqlite import write_intent

IMPORT_BATCH_SIZE: Final = 10_000
EXPORT_BATCH_SIZE: Final = 1_000
_NOTHING_IMPORTED: Final = NOTHING_IMPORTED
# Runs of an import with --skip-invalid when other sessions keep storing names it reads.
_ATTEMPTS: Final = 3
# Names looked up per query when --skip-invalid checks which are stored.
_LOOKUP_CHUNK: Final = 900
_STORED_AMONG: Final = select(User.name).where(User.name.in_(bindparam("names", expanding=True)))
_FIRST: Final = itemgetter(0)
# A consistent snapshot for an export: one transaction sees one state of the table.
# (SQLite's read transaction already is one.)
_SNAPSHOT: Final = {"postgresql": "REPEATABLE READ", "mariadb": "REPEATABLE READ"}

_IMPORT_DESCRIPTION: Final = """\
Load users from FILE (- for standard input): CSV with a "name,number" header
(UTF-8, a byte-order mark tolerated; an empty number is NULL), or JSON Lines,
one {"name": ..., "number": ...} object per line (number: an integer or null).
The format is --format, else the extension (.csv, .jsonl, .ndjson).

The import is one unit of work, committed at the end. With --mode insert (the
default) an invalid row or a name that is stored or repeated fails the whole
import, naming its line; --mode upsert sets the number of stored names (a name
repeated in the file: the last row wins). --skip-invalid imports the valid rows
instead and lists every rejected one in --rejects FILE (CSV: line,reason,record).
"""

_EXPORT_DESCRIPTION: Final = """\
Write every user, in name order, to FILE (- for standard output) as CSV
(name,number) or JSON Lines, from one consistent snapshot of the table. The
format is --format, else the extension (.csv, .jsonl, .ndjson). FILE appears
only once complete; an existing file is replaced only with --force.
"""


@dataclass
class ImportCounts:
    """What an import did with the file's rows; each row counts once."""

    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0


def register(add_command: AddCommand) -> None:
    """Add ``import`` and ``export`` to the command line."""
    importer = add_command(
        "import",
        "load users from a CSV or JSON Lines file",
        _import,
        "no progress bar and no summary; only errors",
        validate=_check_import_arguments,
    )
    importer.description = _IMPORT_DESCRIPTION
    importer.add_argument("file", metavar="FILE", help="the file to read; - for standard input")
    importer.add_argument("--format", choices=FORMATS, help="default: from FILE's extension")
    importer.add_argument(
        "--mode",
        choices=("insert", "upsert"),
        default="insert",
        help="insert: new names only, all or nothing (default); upsert: insert or set the number",
    )
    importer.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the valid rows; list the others in --rejects FILE",
    )
    importer.add_argument(
        "--rejects",
        metavar="FILE",
        help="with --skip-invalid: where rejected rows go (CSV: line,reason,record; - for stdout)",
    )
    importer.add_argument("--force", action="store_true", help="replace an existing --rejects file")
    importer.add_argument(
        "--batch-size",
        type=_positive_int,
        default=IMPORT_BATCH_SIZE,
        metavar="N",
        help=f"rows per statement (default {IMPORT_BATCH_SIZE:,})",
    )
    exporter = add_command(
        "export",
        "write every user to a CSV or JSON Lines file",
        _export,
        "no progress bar and no summary; only errors",
        validate=_check_export_arguments,
    )
    exporter.description = _EXPORT_DESCRIPTION
    exporter.add_argument("file", metavar="FILE", help="the file to write; - for standard output")
    exporter.add_argument("--format", choices=FORMATS, help="default: from FILE's extension")
    exporter.add_argument("--force", action="store_true", help="replace an existing FILE")
    exporter.add_argument(
        "--batch-size",
        type=_positive_int,
        default=EXPORT_BATCH_SIZE,
        metavar="N",
        help=f"users read per query (default {EXPORT_BATCH_SIZE:,})",
    )


def _positive_int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1 or len(text) > 9:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 to 999999999, got {text!r}")
    return int(text)


def _check_import_arguments(args: argparse.Namespace) -> None:
    """Settle the import's format and options before any SQL (usage errors: exit 2)."""
    args.resolved_format = format_of(args.file, args.format)
    if args.skip_invalid and args.rejects is None:
        raise ConfigurationError(
            "--skip-invalid needs --rejects FILE, to keep the rows it rejects "
            "(--rejects /dev/null drops them)"
        )
    if args.rejects is not None and not args.skip_invalid:
        raise ConfigurationError("--rejects goes with --skip-invalid")
    if args.force and args.rejects is None:
        raise ConfigurationError("--force replaces an existing --rejects file; there is none")


def _check_export_arguments(args: argparse.Namespace) -> None:
    """Settle the export's format before any SQL (usage errors: exit 2)."""
    args.resolved_format = format_of(args.file, args.format)


# -- import --------------------------------------------------------------------


def _import(engine: Engine, args: argparse.Namespace) -> None:
    with _Termination("nothing was imported") as termination:
        counts, source_name, elapsed = _import_file(engine, args, termination)
        _summarise_import(args, counts, source_name, elapsed)
        termination.exit_if_received(f"after {_rows(counts.rows)} were imported (committed)")


def _summarise_import(
    args: argparse.Namespace, counts: ImportCounts, source_name: str, elapsed: float
) -> None:
    """Print the summary of a committed import.

    Raises:
        OutputError: standard output could not be written; the message says
            the rows were committed.
    """
    document = {
        "command": "import",
        "file": args.file,
        "format": args.resolved_format,
        "mode": args.mode,
        **asdict(counts),
        "rejects": args.rejects,
        "elapsed_seconds": round(elapsed, 3),
    }
    listed = f" (listed in {files.display_name(args.rejects, 'standard output')})"
    human = (
        f"imported {_rows(counts.rows)} from {source_name} in {elapsed:.2f} s: "
        f"{counts.inserted:,} inserted, {counts.updated:,} updated, "
        f"{counts.unchanged:,} unchanged, {counts.rejected:,} rejected"
        f"{listed if counts.rejected else ''}"
    )
    try:
        _summarise(args, human, document, to_stderr=args.rejects == STDIO)
    except OutputError as exc:
        raise OutputError(
            f"imported {_rows(counts.rows)} (committed), but {_without_commit_note(exc)}"
        ) from exc


def _import_file(
    engine: Engine, args: argparse.Namespace, termination: _Termination
) -> tuple[ImportCounts, str, float]:
    """Import ``args.file`` and commit; return the counts, the file's name and the time taken.

    Raises:
        UserStoreError: the import failed and wrote nothing (the message says so).
    """
    started = time.monotonic()
    committed = False
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_heap_left_alone())
            source = stack.enter_context(files.open_input(args.file))
            rejects = (
                stack.enter_context(_RejectsFile.open(args.rejects, force=args.force))
                if args.skip_invalid
                else None
            )
            bar = stack.enter_context(
                progress.Progress(
                    f"importing {_bar_name(args.file, 'stdin')}",
                    source.size,
                    enabled=progress.wanted(args.quiet),
                )
            )
            session = stack.enter_context(create_session_factory(engine)())
            stack.enter_context(write_intent())  # SQLite: the import takes the write lock up front
            repository = UserRepository(session)
            counts = _run_importer(repository, source, args, rejects, bar)
            if rejects is not None:
                rejects.finish()  # on disk before the import commits
            termination.commit_begins()
            with committing():  # Ctrl-C from here on waits for the commit and the summary
                repository.commit()
            committed = True
            if rejects is not None:
                rejects.publish()
            bar.close()
    except BrokenPipeError:
        raise OutputError(
            f"standard output was closed before all was written; {_NOTHING_IMPORTED}"
        ) from None
    except FileAccessError as exc:  # an OutputError too: stdout refused the rejects
        if committed:  # the rejects file could not be given its name
            raise type(exc)(f"the import was committed, but {exc}") from exc
        if _NOTHING_IMPORTED in str(exc):
            raise
        raise type(exc)(f"{exc}; {_NOTHING_IMPORTED}") from exc
    return counts, source.name, time.monotonic() - started


def _run_importer(
    repository: UserRepository,
    source: files.InputFile,
    args: argparse.Namespace,
    rejects: _RejectsFile | None,
    bar: progress.Progress,
) -> ImportCounts:
    """Run the import's unit of work (not committed); again if --skip-invalid met a race.

    With ``--skip-invalid``, a name looked up as free may be stored by another
    session before this import inserts it. The repository then rolls the
    unit of work back, and the whole import runs again from the start of the
    file, where the lookup finds the name stored and rejects its row. That
    needs a file that can be read again and rejects not yet out for good
    (a regular file is rewritten); otherwise, or after a few runs, the
    import fails naming the line.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        importer = _Importer(
            repository, source, args.resolved_format, args.mode, args.batch_size, rejects, bar
        )
        try:
            return importer.run()
        except _StoredMeanwhileError as race:
            again = (
                attempt < _ATTEMPTS
                and rejects is not None
                and rejects.restart()
                and source.rewind()
            )
            if not again:
                raise race.error from None
    raise AssertionError("unreachable")  # pragma: no cover


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"


def _without_commit_note(error: OutputError) -> str:
    """``error``'s message, without the command line's note that the change was committed."""
    return str(error).removeprefix("the change was committed, but ")


class _Importer:
    """Streams one file's rows into the repository, batch by batch, in one unit of work."""

    def __init__(
        self,
        repository: UserRepository,
        source: files.InputFile,
        fmt: Format,
        mode: str,
        batch_size: int,
        rejects: _RejectsFile | None,
        bar: progress.Progress,
    ) -> None:
        self.repository = repository
        self._source = source
        self._format = fmt
        self._upsert = mode == "upsert"
        self._batch_size = batch_size
        self._rejects = rejects
        self._bar = bar
        self._reader = row_reader(source.stream, fmt, batch_size)
        self._ahead = ReadAhead(self._batches(self._reader), name="userstore import reader")
        self.counts = ImportCounts()

    def run(self) -> ImportCounts:
        """Import every row; return the counts. Nothing is committed here.

        The next batch is read and parsed on a thread while this one is written.
        """
        with self._ahead:
            for batch in self._ahead:
                check_interrupted()  # a Ctrl-C Python dropped stops the import here
                if self._rejects is None:
                    self._write_all_or_fail(batch)
                else:
                    self._write_valid_reject_others(batch, self._rejects)
                self.counts.rows += batch.rows
                self._bar.advance(self.counts.rows, self._source.position())
        return self.counts

    def _batches(self, reader: RowReader) -> Iterator[RowBatch]:
        batches = reader.batches()
        while True:
            try:
                batch = next(batches, None)
            except OSError as exc:
                raise files.read_error(self._source, exc) from None
            if batch is None:
                return
            yield batch

    # -- all or nothing (no --skip-invalid) ----------------------------------

    def _write_all_or_fail(self, batch: RowBatch) -> None:
        if batch.malformed:
            raise self._invalid(batch, None)
        if not batch.pairs:
            return
        try:
            if self._upsert:
                self._upsert_in_order(batch.pairs)
            else:
                self.counts.inserted += self.repository.add_many(
                    batch.pairs, batch_size=self._batch_size
                )
        except InvalidUserError as exc:
            raise self._invalid(batch, exc) from None
        except DuplicateUserError as exc:
            raise self._duplicate(exc.name, batch) from None

    def _upsert_in_order(self, pairs: list[Pair]) -> None:
        """Upsert ``pairs`` as if one by one: a repeated name's later row wins, each row counts."""
        for run in _runs_without_repeats(pairs):
            result = self.repository.upsert_many(run, batch_size=self._batch_size)
            self.counts.inserted += result.inserted
            self.counts.updated += result.updated
            self.counts.unchanged += result.unchanged

    def _invalid(self, batch: RowBatch, error: InvalidUserError | None) -> InvalidUserError:
        """The error naming the first bad row of ``batch``, which the repository refused."""
        first = batch.malformed[0] if batch.malformed else None
        for index, (name, number) in enumerate(batch.pairs):
            line = batch.line(index)
            if first is not None and line > first.line:
                break
            problem = problem_in(name, number)
            if problem is not None:
                first = Reject(line, problem, "")
                break
        if first is None:  # the repository's own message, when no row is to blame
            return InvalidUserError(f"{error}; {_NOTHING_IMPORTED}")
        return InvalidUserError(f"line {first.line}: {first.reason}; {_NOTHING_IMPORTED}")

    def _duplicate(self, named: str, batch: RowBatch) -> DuplicateUserError:
        """The error naming the batch's first row, in file order, whose name is taken.

        Called once the unit of work is rolled back, so what is stored is
        what was there before the import. A name is taken if it is stored,
        or if it is on an earlier line: of this batch, or of the file before
        it, which is read again from the start to find it (holding no more
        than this batch's names). A pipe cannot be read again: then a name
        from an earlier batch is the one the repository named.
        """
        names = [pair[0] for pair in batch.pairs]
        stored = self._stored_among(names)
        seen = self._first_lines_before(set(names), batch.first_line)
        for index, name in enumerate(names):
            line = batch.line(index)
            if name in stored:
                message = f"line {line}: a user named {name!r} is already stored"
                return _DuplicateRowError(name, f"{message}; {_NOTHING_IMPORTED}")
            if name in seen:
                message = f"line {line}: the name {name!r} repeats line {seen[name]}"
                return _DuplicateRowError(name, f"{message}; {_NOTHING_IMPORTED}")
            seen.setdefault(name, line)
        line = batch.line(names.index(named)) if named in names else batch.first_line
        message = f"line {line}: the name {named!r} repeats an earlier line"
        return _DuplicateRowError(named, f"{message}; {_NOTHING_IMPORTED}")

    def _first_lines_before(self, names: set[str], stop: int) -> dict[str, int]:
        """The first line of each of ``names`` before line ``stop``, read afresh (if it can be)."""
        self._ahead.close()  # the file is this thread's again
        if not self._source.rewind():
            return {}
        reader = row_reader(self._source.stream, self._format, self._batch_size)
        found: dict[str, int] = {}
        for batch in self._batches(reader):
            if batch.first_line >= stop:
                break
            for index, (name, _) in enumerate(batch.pairs):
                if name in names and name not in found and batch.line(index) < stop:
                    found[name] = batch.line(index)
        return found

    # -- --skip-invalid ------------------------------------------------------

    def _write_valid_reject_others(self, batch: RowBatch, rejects: _RejectsFile) -> None:
        refused = list(batch.malformed)
        keep = self._valid_indexes(batch, refused)
        if not self._upsert:
            keep = self._new_names_only(batch, keep, refused)
        pairs = batch.pairs if len(keep) == len(batch.pairs) else [batch.pairs[i] for i in keep]
        if pairs:
            if self._upsert:
                self._upsert_in_order(pairs)
            else:
                self.counts.inserted += self._insert_looked_up(batch, keep, pairs)
        if refused:
            refused.sort(key=lambda reject: reject.line)
            rejects.write(refused)
            self.counts.rejected += len(refused)

    def _insert_looked_up(self, batch: RowBatch, keep: list[int], pairs: list[Pair]) -> int:
        """Insert ``pairs``, names looked up as free; one stored meanwhile is a race, not an error.

        Raises:
            _StoredMeanwhileError: another session stored one of the names
                since they were looked up; the unit of work was rolled back.
        """
        try:
            return self.repository.add_many(pairs, batch_size=self._batch_size)
        except DuplicateUserError as exc:
            names = [pair[0] for pair in pairs]
            line = batch.line(keep[names.index(exc.name)]) if exc.name in names else None
            where = f"line {line}: " if line is not None else ""
            message = (
                f"{where}a user named {exc.name!r} was stored by another session while "
                f"this import ran, after its name was looked up; {_NOTHING_IMPORTED} "
                "(run the import again: its row is then rejected as already stored)"
            )
            raise _StoredMeanwhileError(_DuplicateRowError(exc.name, message)) from None

    def _valid_indexes(self, batch: RowBatch, refused: list[Reject]) -> list[int]:
        everything = list(range(len(batch.pairs)))
        try:
            for _ in validated_batches(batch.pairs, max(len(batch.pairs), 1)):
                pass
            return everything
        except InvalidUserError:
            pass
        keep = []
        for index, (name, number) in enumerate(batch.pairs):
            problem = problem_in(name, number)
            if problem is None:
                keep.append(index)
            else:
                refused.append(self._reject(batch, index, problem))
        return keep

    def _new_names_only(self, batch: RowBatch, keep: list[int], refused: list[Reject]) -> list[int]:
        """``keep`` without the rows whose name repeats in the batch or is stored already.

        Stored means in this unit of work, so a name imported from an earlier
        batch counts: it is looked up, never held in memory.
        """
        names = [batch.pairs[i][0] for i in keep]
        first_line: dict[str, int] = {}
        unique = []
        if len(set(names)) == len(names):
            unique = keep
        else:
            for index, name in zip(keep, names, strict=True):
                if name in first_line:
                    refused.append(
                        self._reject(batch, index, f"the name repeats line {first_line[name]}")
                    )
                else:
                    first_line[name] = batch.line(index)
                    unique.append(index)
        stored = self._stored_among([batch.pairs[i][0] for i in unique])
        if not stored:
            return unique
        new = []
        for index in unique:
            if batch.pairs[index][0] in stored:
                refused.append(
                    self._reject(
                        batch,
                        index,
                        "a user of this name is already stored (before the import, "
                        "or from an earlier line)",
                    )
                )
            else:
                new.append(index)
        return new

    def _stored_among(self, names: list[str]) -> set[str]:
        session: Session = self.repository.session
        stored: set[str] = set()
        for start in range(0, len(names), _LOOKUP_CHUNK):
            chunk = names[start : start + _LOOKUP_CHUNK]
            stored.update(session.scalars(_STORED_AMONG, {"names": chunk}))
        return stored

    def _reject(self, batch: RowBatch, index: int, reason: str) -> Reject:
        return Reject(batch.line(index), reason, self._reader.record(batch, index))


class _StoredMeanwhileError(Exception):
    """A name looked up as free was stored by another session before the insert."""

    def __init__(self, error: DuplicateUserError) -> None:
        super().__init__(str(error))
        self.error = error


class _DuplicateRowError(DuplicateUserError):
    """A duplicate, with the import's message naming its line(s)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name)
        self.args = (message,)


def _runs_without_repeats(pairs: list[Pair]) -> Iterator[list[Pair]]:
    """``pairs`` cut, in order, into runs in which no name repeats (usually one run)."""
    names = list(map(_FIRST, pairs))
    if len(set(names)) == len(names):
        yield pairs
        return
    run: list[Pair] = []
    seen: set[str] = set()
    for pair in pairs:
        if pair[0] in seen:
            yield run
            run, seen = [], set()
        run.append(pair)
        seen.add(pair[0])
    yield run


class _RejectsFile:
    """The CSV of rejected rows: ``line,reason,record``, in file order."""

    HEADER: Final = ("line", "reason", "record")

    def __init__(self, output: files.OutputFile) -> None:
        self._output = output
        self._text = io.TextIOWrapper(output.stream, encoding=ENCODING, errors=ERRORS, newline="")
        self._csv = csv.writer(self._text, lineterminator=LINE_END)
        self._headed = False  # the header waits for the first reject, or the end

    def _header(self) -> None:
        if not self._headed:
            self._csv.writerow(self.HEADER)
            self._headed = True

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: str, *, force: bool) -> Iterator[_RejectsFile]:
        with files.output_file(path, force=force, what="the rejects file") as output:
            rejects = cls(output)
            try:
                yield rejects
            finally:
                rejects._detach()

    def write(self, rejects: list[Reject]) -> None:
        with _writing(self._output):
            self._header()
            self._csv.writerows((r.line, r.reason, r.record) for r in rejects)

    def restart(self) -> bool:
        """Start the file again, for the import to run again; false if it cannot be."""
        if not self._headed:
            return True
        with _writing(self._output):
            self._text.flush()
        if not self._output.restart():
            return False
        self._text.seek(0)
        self._headed = False
        return True

    def finish(self) -> None:
        """Put every rejected row on disk, before the import commits."""
        with _writing(self._output):
            self._header()
            self._text.flush()
        self._detach()
        self._output.finish()

    def publish(self) -> None:
        """Give the file its name, once the import has committed."""
        self._output.publish()

    def _detach(self) -> None:
        if self._text is not None:
            with contextlib.suppress(ValueError, OSError):
                self._text.detach()
            self._text = None  # type: ignore[assignment]


# -- export --------------------------------------------------------------------


def _export(engine: Engine, args: argparse.Namespace) -> None:
    with _Termination("no file was written"):
        _export_all(engine, args)


def _export_all(engine: Engine, args: argparse.Namespace) -> None:
    started = time.monotonic()
    fmt: Format = args.resolved_format
    isolation = _SNAPSHOT.get(engine.dialect.name)
    snapshot = engine.execution_options(isolation_level=isolation) if isolation else engine
    exported = 0
    with (
        _heap_left_alone(),
        files.output_file(args.file, force=args.force, what="the export file") as output,
    ):
        with create_session_factory(snapshot)() as session:
            repository = UserRepository(session)
            enabled = progress.wanted(args.quiet)
            total = repository.count() if enabled else None
            text = io.TextIOWrapper(output.stream, encoding=ENCODING, newline="")
            try:
                description = f"exporting to {_bar_name(args.file, 'stdout')}"
                with progress.Progress(description, total, enabled=enabled) as bar:
                    writer = RowWriter(text, fmt)
                    users = repository.iter_all(batch_size=args.batch_size)
                    while page := list(islice(users, args.batch_size)):
                        check_interrupted()  # a Ctrl-C Python dropped stops the export here
                        with _writing(output):
                            writer.write([(user.name, user.number) for user in page])
                        exported += len(page)
                        bar.advance(exported)
                    with _writing(output):
                        text.flush()
            finally:
                with contextlib.suppress(ValueError, OSError):
                    text.detach()
        check_interrupted()
        output.commit()
    elapsed = time.monotonic() - started
    document = {
        "command": "export",
        "file": args.file,
        "format": fmt,
        "exported": exported,
        "elapsed_seconds": round(elapsed, 3),
    }
    how_many = f"{exported:,} user" if exported == 1 else f"{exported:,} users"
    human = f"exported {how_many} to {output.name} in {elapsed:.2f} s"
    _summarise(args, human, document, to_stderr=args.file == STDIO)


@contextlib.contextmanager
def _heap_left_alone() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a transfer; it is back on afterwards.

    A transfer makes a list or tuple per row, none of them in a cycle, so the
    collector finds nothing to free in them, yet the rows it sees alive count
    toward full collections that walk every object of the process
    (SQLAlchemy's, the driver's): measured, that tripled the cost of reading
    a CSV file. Reference counting still frees every row; what cycles the
    transfer makes (about a thousand objects for a million-row import,
    measured) wait for the collector's next run.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _writing(output: files.OutputFile) -> Iterator[None]:
    """Turn a failed write into a FileAccessError (a closed pipe on stdout stays as it is)."""
    try:
        yield
    except BrokenPipeError:
        if output.path == STDIO:
            raise OutputError("standard output was closed before all was written") from None
        raise FileAccessError(f"cannot write {output.name}: broken pipe") from None
    except OSError as exc:
        raise FileAccessError(f"cannot write {output.name}: {exc.strerror or exc}") from None


def _bar_name(path: str, stdio: str) -> str:
    return stdio if path == STDIO else progress.short_name(path)


def _summarise(args: argparse.Namespace, human: str, document: object, *, to_stderr: bool) -> None:
    """The final summary: on stdout, or on stderr when the data itself went to stdout."""
    stream: IO[str] = sys.stderr if to_stderr else sys.stdout
    with contextlib.redirect_stdout(stream):
        emit(args, human, document, answer=False)


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C (rolling back, removing partial files)."""


class _Termination:
    """SIGTERM handled as Ctrl-C is during a transfer: cleaned up, then exit 143, one line.

    Until the commit begins, SIGTERM stops the transfer where it is; from
    then on it is only recorded, and the command exits 143 once done, saying
    the import was committed. Outside the main thread (``main()`` called from
    a thread) Python's handling is kept.

    Args:
        nothing_done: How the message says that nothing was written.
    """

    def __init__(self, nothing_done: str) -> None:
        self._nothing_done = nothing_done
        self._deferred = False
        self._received = False
        self._previous: object = None
        self._installed = False

    def __enter__(self) -> _Termination:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        except ValueError:  # not the main thread
            pass
        return self

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self._received = True
        if not self._deferred:
            raise _Terminated

    def commit_begins(self) -> None:
        """From now on SIGTERM waits for the command to finish."""
        if self._received:
            raise _Terminated
        self._deferred = True

    def exit_if_received(self, done: str) -> None:
        """Exit 143 if SIGTERM arrived once the commit had begun (``done``: what was written)."""
        if self._received:
            self._exit(f"terminated (SIGTERM) {done}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: object,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]
            self._installed = False
        if isinstance(exc, _Terminated):
            self._exit(f"terminated (SIGTERM); {self._nothing_done}")

    @staticmethod
    def _exit(message: str) -> None:
        stream = sys.stderr
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.write(f"userstore: {message}\n")
                stream.flush()
        raise SystemExit(EXIT_TERMINATED)
