"""Run one W4 variant in this fresh process and print its time and peak RSS growth as JSON.

Started by the W4 workload (``python -m benchmarks.measure_read``), never by hand.
An async variant runs on the stack's event loop; the baseline is taken after
its engine and raw connection are open, as for the sync ones.
"""

from __future__ import annotations

import argparse
import json
import time

from sqlalchemy import make_url

from benchmarks import memory
from benchmarks.framework import BenchmarkError
from benchmarks.stack import Stack
from benchmarks.workloads.read_all import ASYNC_READERS, READERS, Tally, expected_tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--variant", required=True, choices=sorted({*READERS, *ASYNC_READERS}))
    parser.add_argument("--rows", required=True, type=int)
    args = parser.parse_args()

    asynchronous = args.variant in ASYNC_READERS
    stack = Stack.open(args.backend, make_url(args.url), with_async=asynchronous)
    try:
        stack.warm_up()
        baseline = memory.start()
        started = time.perf_counter()
        tally = _read(stack, args.variant)
        seconds = time.perf_counter() - started
        growth = memory.peak_growth(baseline)
    finally:
        stack.close()
    if tally != expected_tally(args.rows):
        raise BenchmarkError(f"read (rows, sum) {tally}, expected {expected_tally(args.rows)}")
    print(json.dumps({"seconds": seconds, "rss_growth": growth}))


def _read(stack: Stack, variant: str) -> Tally:
    if variant in READERS:
        return READERS[variant](stack)
    if stack.asynchronous is None:
        raise BenchmarkError(stack.async_unavailable or "no async stack")
    return stack.asynchronous.run(ASYNC_READERS[variant](stack.asynchronous))


if __name__ == "__main__":
    main()
