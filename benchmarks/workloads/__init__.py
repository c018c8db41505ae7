"""The workloads, W1 to W5, each built for one backend's :class:`~benchmarks.stack.Stack`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from benchmarks.framework import Workload
from benchmarks.scales import Scale
from benchmarks.stack import Stack
from benchmarks.workloads import add_commit, bulk_insert, get, read_all, upsert

Builder = Callable[[Stack, Scale], Workload]

WORKLOADS: Final[dict[str, Builder]] = {
    "W1": bulk_insert.build,
    "W2": get.build,
    "W3": add_commit.build,
    "W4": read_all.build,
    "W5": upsert.build,
}
