"""Markdown tables of the medians, ratios and targets, for the terminal and for RESULTS.md."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from benchmarks.framework import MEGABYTE, Target, TargetKind
from benchmarks.runner import VariantResult, WorkloadResult

_MAX_REASON_LENGTH = 160


def render(
    header: Sequence[tuple[str, str]],
    results: Sequence[WorkloadResult],
    skipped: dict[str, str],
) -> str:
    """Return the whole report: the run's header, then per workload its table and targets."""
    lines = ["# userstore benchmarks", ""]
    lines += [f"- **{label}:** {value}" for label, value in header]
    lines += [f"- **Skipped {backend}:** {_cell(reason)}" for backend, reason in skipped.items()]
    lines += [
        "",
        "Median of the rounds; ratios are median time over the baseline's median time "
        "(lower is better). userstore, Core, ORM and advanced-alchemy share userstore's "
        "engine; advanced-alchemy is its SQLAlchemySyncRepository over userstore's User "
        "(id_attribute='name', auto_refresh=False). See benchmarks/README.md.",
    ]
    for key in dict.fromkeys(result.workload.key for result in results):
        lines += ["", *_workload_section([r for r in results if r.workload.key == key], skipped)]
    return "\n".join(lines) + "\n"


def _workload_section(results: list[WorkloadResult], skipped: dict[str, str]) -> list[str]:
    first = results[0].workload
    baselines = list(dict.fromkeys(b for result in results for b in result.workload.baselines))
    columns = ["Backend", "Variant", "Median s", f"{first.unit}/s"]
    columns += [f"x {baseline}" for baseline in baselines]
    if first.measures_rss:
        columns.append("Peak RSS growth")
    lines = [f"## {first.key}: {first.title}", "", *_table_head(columns)]
    for result in results:
        for variant in result.variants:
            lines.append(_row(_variant_cells(result, variant, baselines)))
    for backend, reason in skipped.items():
        lines.append(
            _row([backend, "(all)", f"skipped: {_cell(reason)}"] + [""] * (len(columns) - 3))
        )
    notes = dict.fromkeys(note for result in results for note in result.workload.notes)
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    target_rows = [
        _target_cells(result, target) for result in results for target in result.workload.targets
    ]
    if target_rows:
        lines += ["", "Targets for userstore:", ""]
        lines += _table_head(["Backend", "Target", "Measured", "Status"])
        lines += [_row(cells) for cells in target_rows]
    return lines


def _variant_cells(
    result: WorkloadResult, variant: VariantResult, baselines: list[str]
) -> list[str]:
    cells = [result.backend, variant.name]
    seconds = variant.median_seconds
    if seconds is None:
        reason = variant.why_no_result or "no result"
        blanks = [""] * (1 + len(baselines) + int(result.workload.measures_rss))
        return [*cells, f"n/a: {_cell(reason)}", *blanks]
    cells += [f"{seconds:.4f}", f"{result.workload.operations / seconds:,.0f}"]
    for baseline in baselines:
        reference = result.variant(baseline)
        if reference is None:
            cells.append("—")
            continue
        reference_seconds = reference.median_seconds
        cells.append("n/a" if reference_seconds is None else f"{seconds / reference_seconds:.2f}x")
    if result.workload.measures_rss:
        growth = variant.median_rss_growth
        cells.append("n/a" if growth is None else f"{growth / MEGABYTE:.1f} MB")
    return cells


def _target_cells(result: WorkloadResult, target: Target) -> list[str]:
    measured, met = _evaluate(result, target)
    if measured is None:
        return [result.backend, target.label, "n/a", "n/a"]
    return [result.backend, target.label, measured, "met" if met else "**missed**"]


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


def _cell(text: str) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= _MAX_REASON_LENGTH else flat[: _MAX_REASON_LENGTH - 1] + "…"
