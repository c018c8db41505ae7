"""What userstore's logs and spans cost: W2 (gets) and W3 (add-and-commit units), per mode.

``python -m benchmarks observability [--scale tiny|full] [--backends ...] [--rounds N]``

Each workload's userstore variant (sync and async) runs in four modes, alternated
round by round as every benchmark's variants are (see :mod:`benchmarks.runner`):

- **undecorated**: the repositories' methods swapped for the undecorated ones
  (``__wrapped__``): userstore as it was before it was observable, the baseline;
- **off**: as shipped, nobody listening (the ``userstore`` logger not enabled
  for DEBUG, no slow-call threshold, no tracer provider): the cost of the flag
  checks, which the issue wants at most 2 %;
- **DEBUG records**: the ``userstore`` logger at DEBUG, into a handler that
  formats each record and drops it;
- **spans**: an OpenTelemetry SDK tracer provider (no exporter) handed to
  ``userstore.observability.use_tracer_provider``; skipped without the SDK.

A whole-workload difference of 2 % is within the noise of a shared machine, so
the cost of the wrapper with nobody listening is also measured directly: a
method wrapped exactly as the repositories' are, against the same method
undecorated, a million calls, best of several alternated repeats (timeit's
method, robust to other load). That cost per call, over the time of one get
(W2) or of one unit's two calls (W3) measured above, is the overhead the
wrapper adds when off.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Final

from benchmarks.databases import BACKENDS, BackendUnavailableError, throwaway_database
from benchmarks.framework import ASYNC, SYNC, USERSTORE, USERSTORE_ASYNC, Variant, Workload
from benchmarks.runner import WorkloadResult, run_workload
from benchmarks.scales import SCALES, Scale
from benchmarks.stack import Stack
from benchmarks.workloads import add_commit, get
from userstore import AsyncUserRepository, UserRepository, migrations
from userstore.observability import LOGGER_NAME, use_tracer_provider
from userstore.observability.calls import observed, observed_async

UNDECORATED: Final = "undecorated"
OFF: Final = "off"
DEBUG_RECORDS: Final = "DEBUG records"
SPANS: Final = "spans"
MODES: Final = (UNDECORATED, OFF, DEBUG_RECORDS, SPANS)
OBSERVED_CLASSES: Final = (UserRepository, AsyncUserRepository)


@contextmanager
def undecorated() -> Iterator[None]:
    """Swap every observed method of the repositories for the method it wraps."""
    swapped: list[tuple[type, str, Any]] = []
    for cls in OBSERVED_CLASSES:
        for name, member in list(vars(cls).items()):
            inner = getattr(member, "__wrapped__", None)
            if inner is not None:
                swapped.append((cls, name, member))
                setattr(cls, name, inner)
    try:
        yield
    finally:
        for cls, name, member in swapped:
            setattr(cls, name, member)


class _Formatted(logging.Handler):
    """Formats each record (as a handler that writes would) and drops it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


@contextmanager
def debug_records() -> Iterator[None]:
    logger = logging.getLogger(LOGGER_NAME)
    handler = _Formatted()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def spans_unavailable() -> str | None:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        return f"n/a: the OpenTelemetry SDK is not installed ({exc})"
    return None


@contextmanager
def spans() -> Iterator[None]:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    use_tracer_provider(provider)
    try:
        yield
    finally:
        use_tracer_provider(None)
        provider.shutdown()


MODE_CONTEXT: Final[dict[str, Callable[[], AbstractContextManager[None]]]] = {
    UNDECORATED: undecorated,
    OFF: nullcontext,
    DEBUG_RECORDS: debug_records,
    SPANS: spans,
}


def in_mode(mode: str, run: Callable[[], Any]) -> Callable[[], None]:
    def run_in_mode() -> None:
        with MODE_CONTEXT[mode]():
            run()

    return run_in_mode


def observed_workload(workload: Workload) -> Workload:
    """The workload's userstore variants (sync and async), once per mode."""
    variants = []
    for name, flavour in ((USERSTORE, SYNC), (USERSTORE_ASYNC, ASYNC)):
        base = next(variant for variant in workload.variants if variant.name == name)
        for mode in MODES:
            label = f"{flavour}: {mode}"
            unavailable = base.unavailable or (spans_unavailable() if mode == SPANS else None)
            if base.run is None or unavailable is not None:
                variants.append(Variant.not_available(label, unavailable or "n/a", flavour))
            else:
                variants.append(Variant(label, in_mode(mode, base.run), flavour=flavour))
    workload.variants = variants
    return workload


class _Probe:
    """A method wrapped as the repositories' verbs are, and the same method bare."""

    def _observed_backend(self) -> str:
        return "probe"

    def _observed_unit(self) -> object:
        return self

    def bare(self, name: str) -> str:
        return name

    observed = observed("get")(bare)

    async def bare_async(self, name: str) -> str:
        return name

    observed_async = observed_async("get")(bare_async)


def wrapper_cost_ns(calls: int = 1_000_000, repeats: int = 7) -> dict[str, float]:
    """Nanoseconds the wrapper adds to a call while nobody listens, sync and async."""
    probe = _Probe()

    def sync_loop(method: Callable[[str], str]) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            method("x")
        return time.perf_counter() - started

    async def async_loop(method: Callable[[str], Any]) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await method("x")
        return time.perf_counter() - started

    best = {"sync bare": float("inf"), "sync": float("inf")}
    best |= {"async bare": float("inf"), "async": float("inf")}
    for _ in range(repeats):
        best["sync bare"] = min(best["sync bare"], sync_loop(probe.bare))
        best["sync"] = min(best["sync"], sync_loop(probe.observed))
        best["async bare"] = min(best["async bare"], asyncio.run(async_loop(probe.bare_async)))
        best["async"] = min(best["async"], asyncio.run(async_loop(probe.observed_async)))
    return {
        SYNC: (best["sync"] - best["sync bare"]) / calls * 1e9,
        ASYNC: (best["async"] - best["async bare"]) / calls * 1e9,
    }


def wrapper_table(results: list[WorkloadResult], cost: dict[str, float]) -> str:
    """The wrapper's cost when off, as a share of one W2 get and one W3 unit (two calls)."""
    lines = [
        f"Wrapper cost with nobody listening: {cost[SYNC]:.0f} ns per sync call, "
        f"{cost[ASYNC]:.0f} ns per async call (best of alternated repeats of 1,000,000 calls).",
        "",
        "| Workload | Backend | Flavour | undecorated, per get or unit | wrapper calls | "
        "wrapper cost, off |",
        "| --- | --- | --- | --: | --: | --: |",
    ]
    for result in results:
        calls = 1 if result.workload.key == "W2" else 2  # W3: add, commit
        for flavour in (SYNC, ASYNC):
            variant = result.variant(f"{flavour}: {UNDECORATED}")
            median = None if variant is None else variant.median_seconds
            if median is None:
                continue
            per_operation = median / result.workload.operations
            share = calls * cost[flavour] * 1e-9 / per_operation
            lines.append(
                f"| {result.workload.key} | {result.backend} | {flavour} | "
                f"{per_operation * 1e6:.1f} µs | {calls} | {share:.2%} |"
            )
    return "\n".join(lines) + "\n"


def table(results: list[WorkloadResult]) -> str:
    lines = [
        "| Workload | Backend | Flavour | undecorated s | off s | off / undecorated "
        "| DEBUG records s | x undecorated | spans s | x undecorated |",
        "| --- | --- | --- | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for result in results:
        for flavour in (SYNC, ASYNC):
            medians = {}
            for mode in MODES:
                variant = result.variant(f"{flavour}: {mode}")
                medians[mode] = None if variant is None else variant.median_seconds
            base = medians[UNDECORATED]

            def cell(
                mode: str, base: float | None = base, medians: dict[str, Any] = medians
            ) -> str:
                value = medians[mode]
                if value is None:
                    return "n/a | n/a"
                ratio = "n/a" if not base else f"{value / base:.3f}x"
                return f"{value:.4f} | {ratio}"

            lines.append(
                f"| {result.workload.key} | {result.backend} | {flavour} | "
                + ("n/a" if base is None else f"{base:.4f}")
                + f" | {cell(OFF)} | {cell(DEBUG_RECORDS)} | {cell(SPANS)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks observability",
        description="What userstore's logs and spans cost on W2 and W3, against the "
        "undecorated methods.",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--rounds", type=int, help="default: 9 at full scale, 1 at tiny")
    args = parser.parse_args(argv)
    scale: Scale = SCALES[args.scale]
    rounds = args.rounds or (9 if scale.name == "full" else 1)
    results: list[WorkloadResult] = []
    with tempfile.TemporaryDirectory(prefix="userstore_bench_") as directory:
        for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
            try:
                with throwaway_database(backend, Path(directory)) as url:
                    migrations.upgrade(url)
                    stack = Stack.open(backend, url)
                    try:
                        stack.warm_up()
                        for build in (get.build, add_commit.build):
                            workload = observed_workload(build(stack, scale))
                            results.append(run_workload(workload, backend, rounds, _progress))
                    finally:
                        stack.close()
            except BackendUnavailableError as exc:
                _progress(f"{backend}: skipped: {exc}")
    print(f"Scale {scale.name}, {rounds} rounds, median seconds per run.\n")
    print(table(results))
    print(wrapper_table(results, wrapper_cost_ns()), end="")
    failures = [f"{r.workload.key} {r.backend} {v.name}" for r in results for v in r.failures]
    if failures:
        _progress("failed: " + ", ".join(failures))
    return 1 if failures else 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
