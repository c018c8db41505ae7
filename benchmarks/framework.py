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
# The async twins, on userstore's async engine (aiosqlite, asyncpg, asyncmy).
USERSTORE_ASYNC: Final = "userstore async"
RAW_ASYNC: Final = "raw async driver"
RAW_ASYNC_COPY: Final = "raw async COPY"
ASYNC_SESSION: Final = "AsyncSession"
ADVANCED_ALCHEMY_ASYNC: Final = "advanced-alchemy async"

SYNC: Final = "sync"
ASYNC: Final = "async"
FLAVOURS: Final = (SYNC, ASYNC)


@dataclass(frozen=True)
class Row:
    """One line of a report table: a library, with its sync variant and its async twin."""

    label: str
    sync: str | None
    asynchronous: str | None

    def name(self, flavour: str) -> str | None:
        return self.sync if flavour == SYNC else self.asynchronous


ROWS: Final = (
    Row("userstore", USERSTORE, USERSTORE_ASYNC),
    Row("raw driver", RAW, RAW_ASYNC),
    Row("raw COPY", RAW_COPY, RAW_ASYNC_COPY),
    Row("SQLAlchemy Core", CORE, None),
    Row("SQLAlchemy ORM / AsyncSession", ORM, ASYNC_SESSION),
    Row("ORM (default engine)", ORM_DEFAULT_ENGINE, None),
    Row("advanced-alchemy", ADVANCED_ALCHEMY, ADVANCED_ALCHEMY_ASYNC),
)


def async_twin(name: str) -> str | None:
    """The async variant that pairs with the sync variant ``name``, if there is one."""
    return next((row.asynchronous for row in ROWS if row.sync == name), None)


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
    :class:`Measured`. An async variant's ``run`` drives the backend's event
    loop through one coroutine. ``run`` is ``None`` when the variant cannot run
    here (``unavailable`` says why). A failure of an ``optional`` variant (a
    third-party library) is reported as n/a; any other failure makes the run
    exit non-zero.
    """

    name: str
    run: Run | None
    unavailable: str | None = None
    optional: bool = False
    flavour: str = SYNC

    @classmethod
    def not_available(cls, name: str, reason: str, flavour: str = SYNC) -> Variant:
        return cls(name=name, run=None, unavailable=reason, optional=True, flavour=flavour)


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


def as_fast_as_advanced_alchemy(flavour: str = SYNC) -> Target:
    """userstore is at least as fast as advanced-alchemy (sync, or async against async)."""
    if flavour == ASYNC:
        return at_most(
            "at least as fast as advanced-alchemy async",
            USERSTORE_ASYNC,
            ADVANCED_ALCHEMY_ASYNC,
            1.0,
        )
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
    baselines: tuple[str, ...] = (RAW,)  # sync names; each flavour compares with its twin
    targets: tuple[Target, ...] = ()
    measures_rss: bool = False
    notes: list[str] = field(default_factory=list)  # printed under the table
