"""What a workload is made of: variants to time, table resets, result checks and targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

# Variant names, the same in every workload and table.
USERSTORE: Final = "userstore"
RAW: Final = "raw DB-API"
RAW_COPY: Final = "raw COPY"
CORE: Final = "SQLAlchemy Core"
ORM: Final = "SQLAlchemy ORM"
ORM_DEFAULT_ENGINE: Final = "ORM (default engine)"
ADVANCED_ALCHEMY: Final = "advanced-alchemy"

MEGABYTE: Final = 1024 * 1024


class BenchmarkError(Exception):
    """A variant did the wrong thing (wrong row count, wrong result): its time would lie."""


@dataclass(frozen=True)
class Measured:
    """A timing a variant took itself (in a subprocess), with its peak RSS growth."""

    seconds: float
    rss_growth: int | None = None  # bytes


Run = Callable[[], Measured | None]


@dataclass(frozen=True)
class Variant:
    """One way of doing a workload.

    ``run`` does the work once; the runner times the call, unless it returns a
    :class:`Measured`. ``run`` is ``None`` when the variant cannot run here
    (``unavailable`` says why). A failure of an ``optional`` variant (a third-party
    library) is reported as n/a; any other failure makes the run exit non-zero.
    """

    name: str
    run: Run | None
    unavailable: str | None = None
    optional: bool = False

    @classmethod
    def not_available(cls, name: str, reason: str) -> Variant:
        return cls(name=name, run=None, unavailable=reason, optional=True)


class TargetKind(Enum):
    AT_MOST = "at most"  # variant time / reference time <= limit
    SPEEDUP = "speedup"  # reference time / variant time >= limit
    RSS_BELOW = "rss below"  # variant peak RSS growth < limit (bytes)


@dataclass(frozen=True)
class Target:
    """A goal for one variant, checked against the medians."""

    label: str
    kind: TargetKind
    variant: str
    limit: float
    reference: str | None = None


def at_most(label: str, variant: str, reference: str, limit: float) -> Target:
    """``variant`` takes at most ``limit`` times as long as ``reference``."""
    return Target(label, TargetKind.AT_MOST, variant, limit, reference)


def speedup(label: str, variant: str, reference: str, factor: float) -> Target:
    """``variant`` is at least ``factor`` times faster than ``reference``."""
    return Target(label, TargetKind.SPEEDUP, variant, factor, reference)


def rss_below(label: str, variant: str, megabytes: float) -> Target:
    """``variant``'s peak RSS growth stays below ``megabytes``."""
    return Target(label, TargetKind.RSS_BELOW, variant, megabytes * MEGABYTE)


def as_fast_as_advanced_alchemy() -> Target:
    return at_most("at least as fast as advanced-alchemy", USERSTORE, ADVANCED_ALCHEMY, 1.0)


def _nothing() -> None:
    return None


@dataclass
class Workload:
    """One workload on one backend, ready to run.

    ``prepare`` runs once before the rounds, ``reset`` before every timed run
    and ``check`` after it; none of them is timed.
    """

    key: str
    title: str
    operations: int
    unit: str
    variants: list[Variant]
    reset: Callable[[], None] = _nothing
    check: Callable[[], None] = _nothing
    prepare: Callable[[], None] = _nothing
    baselines: tuple[str, ...] = (RAW,)
    targets: tuple[Target, ...] = ()
    measures_rss: bool = False
    notes: list[str] = field(default_factory=list)  # printed under the table
