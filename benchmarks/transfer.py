"""``userstore import`` and ``export`` at scale: what the command line costs over ``add_many``.

Two measurements per backend, on a database of their own:

1. **Import.** N users from a CSV file through the real command-line code
   path (``userstore.cli.main(["import", FILE, ...])``, in this process: the
   engine, the schema check, reading, parsing, the batches, the commit),
   against ``repo.add_many(pairs)`` and ``commit()`` of the same N pairs
   already in memory, on an engine made beforehand. The two alternate, round
   after round, on an emptied table; the ratio of their medians has a target
   of at most 1.3x.
2. **Export.** ``userstore export`` of the N users, in a fresh subprocess
   that takes a memory baseline after its imports and reports its peak RSS
   growth (target: under 50 MB) and its time.

``python -m benchmarks.transfer --rows 1000000`` runs it alone; ``python -m
benchmarks`` runs it after the workloads (2,000 rows at ``--scale tiny``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sqlalchemy import URL, Engine, text

from benchmarks.databases import BACKENDS, BackendUnavailableError, throwaway_database
from benchmarks.framework import MEGABYTE, BenchmarkError
from userstore import UserRepository, create_engine, create_session_factory, migrations

KEY: Final = "transfer"  # its name in ``python -m benchmarks --workloads``
ROWS: Final = {"tiny": 2_000, "full": 1_000_000}
IMPORT_TARGET: Final = 1.3  # CLI import time over add_many time
RSS_TARGET_MB: Final = 50
_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[1]

Progress = Callable[[str], None]


@dataclass
class TransferResult:
    """The figures of one backend."""

    backend: str
    rows: int
    add_many_seconds: list[float] = field(default_factory=list)
    import_seconds: list[float] = field(default_factory=list)
    export_seconds: float | None = None
    export_rss_growth: int | None = None  # bytes
    failure: str | None = None

    @property
    def ratio(self) -> float | None:
        if not self.add_many_seconds or not self.import_seconds:
            return None
        return statistics.median(self.import_seconds) / statistics.median(self.add_many_seconds)


def pair(index: int) -> tuple[str, int | None]:
    """The user at ``index``: every tenth has no number, so CSV's empty field is exercised."""
    return f"user{index:08d}", None if index % 10 == 9 else index


def write_csv(path: Path, rows: int) -> None:
    """The import file: a ``name,number`` header and ``rows`` users."""
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("name,number\n")
        chunk = 100_000
        for start in range(0, rows, chunk):
            file.write(
                "".join(
                    f"{name},{'' if number is None else number}\n"
                    for name, number in map(pair, range(start, min(start + chunk, rows)))
                )
            )


def run_backend(
    backend: str, rows: int, rounds: int, directory: Path, progress: Progress
) -> TransferResult:
    """Both measurements on a throwaway database of ``backend``.

    Raises:
        BackendUnavailableError: the server cannot be reached.
    """
    result = TransferResult(backend, rows)
    with throwaway_database(backend, directory) as url:
        migrations.upgrade(url)
        source = directory / f"transfer_{backend}.csv"
        write_csv(source, rows)
        pairs = [pair(index) for index in range(rows)]  # in memory before any clock starts
        engine = create_engine(url)
        try:
            sessions = create_session_factory(engine)
            url_text = url.render_as_string(hide_password=False)

            def with_add_many() -> None:
                with sessions() as session:
                    repository = UserRepository(session)
                    repository.add_many(pairs)
                    repository.commit()

            def with_the_command_line() -> None:
                from userstore.cli import main

                status = main(["--url", url_text, "import", str(source), "--quiet"])
                if status != 0:
                    raise BenchmarkError(f"userstore import exited with {status}")

            variants = [
                (with_add_many, result.add_many_seconds),
                (with_the_command_line, result.import_seconds),
            ]
            for round_number in range(1, rounds + 1):
                progress(f"transfer {backend}: import round {round_number}/{rounds}")
                for run, seconds in variants if round_number % 2 else variants[::-1]:
                    _empty(engine)
                    started = time.perf_counter()
                    run()
                    seconds.append(time.perf_counter() - started)
                    _check_count(engine, rows)
            progress(f"transfer {backend}: export")
            result.export_seconds, result.export_rss_growth = _measure_export(
                url, directory / f"export_{backend}.csv", rows
            )
        finally:
            engine.dispose()
    return result


def _empty(engine: Engine) -> None:
    statement = "DELETE FROM users" if engine.dialect.name == "sqlite" else "TRUNCATE users"
    with engine.begin() as connection:
        connection.execute(text(statement))


def _check_count(engine: Engine, rows: int) -> None:
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM users")).scalar_one()
    if count != rows:
        raise BenchmarkError(f"{count:,} users stored, expected {rows:,}")


def _measure_export(url: URL, target: Path, rows: int) -> tuple[float, int]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.transfer",
            "--measure-export",
            url.render_as_string(hide_password=False),
            str(target),
        ],
        cwd=_REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchmarkError(f"export subprocess failed: {completed.stderr.strip()[-300:]}")
    measured = json.loads(completed.stdout)
    with target.open("rb") as exported:
        lines = sum(1 for _ in exported)
    target.unlink()
    if lines != rows + 1:
        raise BenchmarkError(f"the export has {lines - 1:,} users, expected {rows:,}")
    return float(measured["seconds"]), int(measured["rss_growth"])


def measure_export(url: str, target: str) -> None:
    """In a fresh process: export every user to ``target``; print time and peak RSS growth."""
    from benchmarks import memory
    from userstore.cli import main

    baseline = memory.start()
    started = time.perf_counter()
    status = main(["--url", url, "export", target, "--quiet", "--force"])
    seconds = time.perf_counter() - started
    growth = memory.peak_growth(baseline)
    if status != 0:
        raise SystemExit(f"userstore export exited with {status}")
    print(json.dumps({"seconds": seconds, "rss_growth": growth}))


def run_all(
    backends: Sequence[str], rows: int, rounds: int, directory: Path, progress: Progress
) -> tuple[list[TransferResult], dict[str, str]]:
    """Measure every backend; return the results and the skipped backends with why."""
    results: list[TransferResult] = []
    skipped: dict[str, str] = {}
    for backend in backends:
        try:
            results.append(run_backend(backend, rows, rounds, directory, progress))
        except BackendUnavailableError as exc:
            skipped[backend] = str(exc)
            progress(f"transfer {backend}: skipped: {exc}")
        except Exception as exc:  # reported in the table; the other backends go on
            failed = TransferResult(backend, rows, failure=" ".join(f"{exc}".split())[:300])
            failed.failure = f"{type(exc).__name__}: {failed.failure}"
            results.append(failed)
            progress(f"transfer {backend}: failed: {failed.failure}")
    return results, skipped


def render(results: list[TransferResult], skipped: dict[str, str], rounds: int) -> str:
    """The Markdown section of the report."""
    rows = max((result.rows for result in results), default=0)
    lines = [
        f"## Import and export: {rows:,} users through the command line",
        "",
        "Import: `userstore import FILE.csv` (the CLI code path, in process) against "
        "`add_many` of the same pairs already in memory, then `commit()`; alternated, "
        f"median of {rounds} round(s). Export: `userstore export FILE.csv` in a fresh "
        "subprocess, peak RSS growth over its baseline. See benchmarks/README.md.",
        "",
        "| Backend | add_many s | import s | import / add_many | target | "
        "export s | export peak RSS growth | target |",
        "| --- | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for result in results:
        if result.failure is not None:
            lines.append(f"| {result.backend} | failed: {result.failure} |  |  |  |  |  |  |")
            continue
        ratio = result.ratio
        growth = result.export_rss_growth
        lines.append(
            f"| {result.backend} "
            f"| {statistics.median(result.add_many_seconds):.3f} "
            f"| {statistics.median(result.import_seconds):.3f} "
            f"| {ratio:.2f}x "
            f"| <= {IMPORT_TARGET}x: {_status(ratio is not None and ratio <= IMPORT_TARGET)} "
            f"| {result.export_seconds:.3f} "
            f"| {(growth or 0) / MEGABYTE:.1f} MB "
            f"| < {RSS_TARGET_MB} MB: "
            f"{_status(growth is not None and growth < RSS_TARGET_MB * MEGABYTE)} |"
        )
    lines.extend(
        f"| {backend} | skipped: {why} |  |  |  |  |  |  |" for backend, why in skipped.items()
    )
    return "\n".join(lines) + "\n"


def _status(met: bool) -> str:
    return "met" if met else "**missed**"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transfer",
        description="Benchmark userstore import and export against add_many.",
    )
    parser.add_argument("--rows", type=int, default=ROWS["tiny"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated, from: " + ",".join(BACKENDS),
    )
    parser.add_argument("--output", type=Path, help="also write the section to this file")
    parser.add_argument(
        "--measure-export", nargs=2, metavar=("URL", "FILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.measure_export:
        measure_export(*args.measure_export)
        return 0
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in backends if name not in BACKENDS]
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {','.join(BACKENDS)}")
    with tempfile.TemporaryDirectory(prefix="userstore_bench_") as directory:
        results, skipped = run_all(backends, args.rows, args.rounds, Path(directory), _progress)
    report = render(results, skipped, args.rounds)
    print(report, end="")
    if args.output is not None:
        args.output.write_text(report)
    return 1 if any(result.failure for result in results) else 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
