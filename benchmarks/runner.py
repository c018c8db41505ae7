"""Run a workload's variants alternately, round after round, and keep every timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from benchmarks.framework import Variant, Workload

_MAX_FAILURE_LENGTH: Final = 300


@dataclass
class VariantResult:
    """Every timing of one variant, or why it has none."""

    name: str
    optional: bool
    flavour: str
    seconds: list[float] = field(default_factory=list)
    rss_growth: list[int] = field(default_factory=list)
    unavailable: str | None = None
    failure: str | None = None

    @property
    def median_seconds(self) -> float | None:
        if self.failure is not None or not self.seconds:
            return None
        return statistics.median(self.seconds)

    @property
    def median_rss_growth(self) -> int | None:
        if self.failure is not None or not self.rss_growth:
            return None
        return int(statistics.median(self.rss_growth))

    @property
    def why_no_result(self) -> str | None:
        if self.failure is not None:
            return f"failed: {self.failure}"
        return self.unavailable


@dataclass
class WorkloadResult:
    """The results of one workload on one backend."""

    workload: Workload
    backend: str
    variants: list[VariantResult]

    def variant(self, name: str) -> VariantResult | None:
        return next((result for result in self.variants if result.name == name), None)

    @property
    def failures(self) -> list[VariantResult]:
        """Failed variants that must not fail (everything but third-party libraries)."""
        return [result for result in self.variants if result.failure and not result.optional]


def run_workload(
    workload: Workload, backend: str, rounds: int, progress: Callable[[str], None]
) -> WorkloadResult:
    """Prepare the table, then time every variant once per round, each round in turn.

    Round 1 runs the variants in their order (A, B, C, ...), round 2 starts
    one later (B, C, ..., A), and so on: drift on the machine falls on every
    variant alike, and no variant always runs right after the same one (the
    garbage a variant leaves, or the cache it warms, is not always the next
    one's gain or cost). ``reset`` runs before and ``check`` after every timed
    run, untimed. A variant that raises is reported as failed and left out of
    later rounds.
    """
    results = [
        VariantResult(
            variant.name, variant.optional, variant.flavour, unavailable=variant.unavailable
        )
        for variant in workload.variants
    ]
    progress(f"{workload.key} {backend}: preparing")
    workload.prepare()
    pairs = list(zip(workload.variants, results, strict=True))
    for round_number in range(1, rounds + 1):
        progress(f"{workload.key} {backend}: round {round_number}/{rounds}")
        shift = (round_number - 1) % len(pairs) if pairs else 0
        for variant, result in pairs[shift:] + pairs[:shift]:
            if variant.run is not None and result.failure is None:
                _time_once(workload, variant, result)
    return WorkloadResult(workload, backend, results)


def _time_once(workload: Workload, variant: Variant, result: VariantResult) -> None:
    assert variant.run is not None
    workload.reset()
    try:
        started = time.perf_counter()
        measured = variant.run()
        elapsed = time.perf_counter() - started
        workload.check()
    except Exception as exc:  # reported in the table; the other variants go on
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        result.failure = message[:_MAX_FAILURE_LENGTH]
        return
    if measured is None:
        result.seconds.append(elapsed)
        return
    result.seconds.append(measured.seconds)
    if measured.rss_growth is not None:
        result.rss_growth.append(measured.rss_growth)
