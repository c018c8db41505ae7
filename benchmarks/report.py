"""Markdown tables of the medians, ratios and targets, for the terminal and for RESULTS.md.

Each workload gets one table: a line per backend and library, with the sync
variant's columns and, beside them, its async twin's (see
:data:`benchmarks.framework.ROWS`). Each flavour's ratios are to the raw
driver of the same flavour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from benchmarks.framework import ASYNC, FLAVOURS, MEGABYTE, ROWS, SYNC, Target, TargetKind
from benchmarks.runner import VariantResult, WorkloadResult

_MAX_REASON_LENGTH = 160
_PREFIX = {SYNC: "Sync", ASYNC: "Async"}


def render(
    header: Sequence[tuple[str, str]],
    results: Sequence[WorkloadResult],
    skipped: dict[str, str],
) -> str:
    """Return the whole report: the run's header, then per workload its table and targets."""
    lines = ["# userstore benchmarks", ""]
    lines += [f"- **{label}:** {_cell(value, limit=None)}" for label, value in header]
    lines += [f"- **Skipped {backend}:** {_cell(reason)}" for backend, reason in skipped.items()]
    lines += [
        "",
        "Median of the rounds; ratios are median time over the baseline's median time "
        "(lower is better). Each line is one library: its sync variant, and beside it its "
        "async twin, each compared with the raw driver of its own flavour. userstore, Core, "
        "ORM and advanced-alchemy share userstore's engine; the async variants share "
        "userstore's async engine (create_async_engine on the same URL). advanced-alchemy is "
        "its SQLAlchemySyncRepository / SQLAlchemyAsyncRepository over userstore's User "
        "(id_attribute='name', auto_refresh=False). See benchmarks/README.md.",
    ]
    for key in dict.fromkeys(result.workload.key for result in results):
        lines += ["", *_workload_section([r for r in results if r.workload.key == key], skipped)]
    return "\n".join(lines) + "\n"


def _workload_section(results: list[WorkloadResult], skipped: dict[str, str]) -> list[str]:
    first = results[0].workload
    present = {variant.flavour for result in results for variant in result.variants}
    flavours = [flavour for flavour in FLAVOURS if flavour in present]
    baselines = list(dict.fromkeys(b for result in results for b in result.workload.baselines))
    columns = ["Backend", "Variant"]
    for flavour in flavours:
        columns += [f"{_PREFIX[flavour]} s", f"{first.unit}/s"]
        columns += [f"x {_baseline(baseline, flavour)}" for baseline in baselines]
        if first.measures_rss:
            columns.append(f"{_PREFIX[flavour]} peak RSS growth")
    both = len(flavours) == len(FLAVOURS)
    if both:
        columns.append("async / sync")
    lines = [f"## {first.key}: {first.title}", "", *_table_head(columns)]
    for result in results:
        for row in ROWS:
            pair = [_result_of(result, row.name(flavour)) for flavour in flavours]
            if all(variant is None for variant in pair):
                continue
            cells = [result.backend, row.label]
            for flavour, variant in zip(flavours, pair, strict=True):
                cells += _variant_cells(result, variant, flavour, baselines)
            if both:
                cells.append(_async_over_sync(*pair))
            lines.append(_row(cells))
    for backend, reason in skipped.items():
        lines.append(
            _row([backend, "(all)", f"skipped: {_cell(reason)}"] + [""] * (len(columns) - 3))
        )
    notes = dict.fromkeys(note for result in results for note in result.workload.notes)
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    target_rows = [
        _target_cells(result, target)
        for result in results
        for target in result.workload.targets
        if _flavour_of(result, target.variant) in flavours
    ]
    if target_rows:
        lines += ["", "Targets for userstore:", ""]
        lines += _table_head(["Backend", "Variant", "Target", "Measured", "Status"])
        lines += [_row(cells) for cells in target_rows]
    return lines


def _baseline(sync_name: str, flavour: str) -> str:
    """The name of ``flavour``'s variant on the line of the sync baseline ``sync_name``."""
    row = next((row for row in ROWS if row.sync == sync_name), None)
    return (row.name(flavour) if row else None) or sync_name


def _result_of(result: WorkloadResult, name: str | None) -> VariantResult | None:
    return None if name is None else result.variant(name)


def _flavour_of(result: WorkloadResult, name: str) -> str | None:
    variant = result.variant(name)
    return variant.flavour if variant is not None else None


def _variant_cells(
    result: WorkloadResult, variant: VariantResult | None, flavour: str, baselines: list[str]
) -> list[str]:
    width = 2 + len(baselines) + int(result.workload.measures_rss)
    if variant is None:
        return [""] * width
    seconds = variant.median_seconds
    if seconds is None:
        reason = variant.why_no_result or "no result"
        return [f"n/a: {_cell(reason)}", *[""] * (width - 1)]
    cells = [f"{seconds:.4f}", f"{result.workload.operations / seconds:,.0f}"]
    for baseline in baselines:
        reference = result.variant(_baseline(baseline, flavour))
        if reference is None:
            cells.append("—")
            continue
        reference_seconds = reference.median_seconds
        cells.append("n/a" if reference_seconds is None else f"{seconds / reference_seconds:.2f}x")
    if result.workload.measures_rss:
        growth = variant.median_rss_growth
        cells.append("n/a" if growth is None else f"{growth / MEGABYTE:.1f} MB")
    return cells


def _async_over_sync(sync: VariantResult | None, asynchronous: VariantResult | None) -> str:
    if sync is None or asynchronous is None:
        return ""
    sync_seconds, async_seconds = sync.median_seconds, asynchronous.median_seconds
    if sync_seconds is None or async_seconds is None:
        return "n/a"
    return f"{async_seconds / sync_seconds:.2f}x"


def _target_cells(result: WorkloadResult, target: Target) -> list[str]:
    measured, met = _evaluate(result, target)
    if measured is None:
        return [result.backend, target.variant, target.label, "n/a", "n/a"]
    status = "met" if met else "**missed**"
    return [result.backend, target.variant, target.label, measured, status]


def _evaluate(result: WorkloadResult, target: Target) -> tuple[str | None, bool]:
    subject = result.variant(target.variant)
    if subject is None:
        return None, False
    if target.kind is TargetKind.RSS_BELOW:
        growth = subject.median_rss_growth
        if growth is None:
            return None, False
        return f"{growth / MEGABYTE:.1f} MB", growth < target.limit
    reference = result.variant(target.reference) if target.reference else None
    seconds = subject.median_seconds
    reference_seconds = reference.median_seconds if reference else None
    if seconds is None or reference_seconds is None:
        return None, False
    if target.kind is TargetKind.SPEEDUP:
        factor = reference_seconds / seconds
        return f"{factor:.1f}x faster than {target.reference}", factor >= target.limit
    ratio = seconds / reference_seconds
    return f"{ratio:.2f}x {target.reference}", ratio <= target.limit


def _table_head(columns: Sequence[str]) -> list[str]:
    alignment = ["---" if index < 2 else "--:" for index in range(len(columns))]
    return [_row(columns), _row(alignment)]


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(text: str, limit: int | None = _MAX_REASON_LENGTH) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"
