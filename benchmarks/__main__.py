"""``python -m benchmarks``: run the workloads on each backend and print (and save) the tables."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import environment, report, transfer
from benchmarks.databases import BACKENDS, BackendUnavailableError, throwaway_database
from benchmarks.framework import FLAVOURS
from benchmarks.runner import WorkloadResult, run_workload
from benchmarks.scales import SCALES, Scale
from benchmarks.stack import Stack
from benchmarks.workloads import WORKLOADS
from userstore import migrations


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["observability"]:  # what the logs and spans cost (W2, W3)
        from benchmarks import observability

        return observability.main(arguments[1:])
    if arguments[:1] == ["routing"]:  # what read routing costs (W2, W3) on the clusters
        from benchmarks import routing

        return routing.main(arguments[1:])
    args = _parse_arguments(arguments)
    scale = SCALES[args.scale]
    rounds = args.rounds or scale.rounds
    start = environment.started()
    started_at = time.monotonic()
    results: list[WorkloadResult] = []
    skipped: dict[str, str] = {}
    aborted: dict[str, str] = {}
    servers: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="userstore_bench_") as directory:
        for backend in args.backends:
            try:
                _run_backend(backend, Path(directory), scale, rounds, args, servers, results)
            except BackendUnavailableError as exc:
                skipped[backend] = str(exc)
                _progress(f"{backend}: skipped: {exc}")
            except Exception as exc:  # the server went away mid-run, say: report what ran
                aborted[backend] = " ".join(f"{type(exc).__name__}: {exc}".split())
                _progress(f"{backend}: aborted: {aborted[backend]}")
        transferred, not_transferred = (
            transfer.run_all(
                args.backends, transfer.ROWS[scale.name], rounds, Path(directory), _progress
            )
            if transfer.KEY in args.workloads
            else ([], {})
        )
    minutes = (time.monotonic() - started_at) / 60
    header = environment.describe(scale, rounds, servers, start, minutes)
    header += [(f"Aborted {backend}", reason) for backend, reason in aborted.items()]
    text = report.render(header, results, skipped)
    if transfer.KEY in args.workloads:
        text += "\n" + transfer.render(transferred, not_transferred, rounds)
    print(text, end="")
    if args.output is not None:
        args.output.write_text(text)
        _progress(f"wrote {args.output}")
    failures = [f"{r.workload.key} {r.backend} {v.name}" for r in results for v in r.failures]
    failures += [f"{transfer.KEY} {r.backend}" for r in transferred if r.failure]
    if failures:
        _progress("failed: " + ", ".join(failures))
    return 1 if failures or aborted else 0


def _run_backend(
    backend: str,
    directory: Path,
    scale: Scale,
    rounds: int,
    args: argparse.Namespace,
    servers: dict[str, str],
    results: list[WorkloadResult],
) -> None:
    """Run the workloads on one backend, adding each result to ``results`` as it ends."""
    with throwaway_database(backend, directory) as url:
        _progress(f"{backend}: migrating {url.render_as_string()}")
        migrations.upgrade(url)
        stack = Stack.open(backend, url, with_async="async" in args.flavours)
        if stack.async_unavailable and "async" in args.flavours:
            _progress(f"{backend}: async variants n/a: {stack.async_unavailable}")
        try:
            servers[backend] = stack.raw.server_version()
            stack.warm_up()
            for key in (key for key in WORKLOADS if key in args.workloads):
                workload = WORKLOADS[key](stack, scale)
                workload.variants = [v for v in workload.variants if v.flavour in args.flavours]
                results.append(run_workload(workload, backend, rounds, _progress))
        finally:
            stack.close()


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark userstore against raw drivers, SQLAlchemy and advanced-alchemy.",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument(
        "--backends",
        type=_choices(BACKENDS),
        default=list(BACKENDS),
        help="comma-separated, from: " + ",".join(BACKENDS),
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        help="rounds per workload (default: 5 at full scale, 1 at tiny)",
    )
    parser.add_argument(
        "--workloads",
        type=_choices((*WORKLOADS, transfer.KEY)),
        default=[*WORKLOADS, transfer.KEY],
        help="comma-separated, from: " + ",".join((*WORKLOADS, transfer.KEY)),
    )
    parser.add_argument(
        "--flavours",
        type=_choices(FLAVOURS),
        default=list(FLAVOURS),
        help="comma-separated, from: sync,async (async: userstore's async twin and its peers)",
    )
    parser.add_argument("--output", type=Path, help="also write the report to this Markdown file")
    return parser.parse_args(argv)


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list from {','.join(allowed)}, got {value!r}"
            )
        return list(dict.fromkeys(names))

    return parse


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
