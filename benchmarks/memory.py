"""Peak resident-set growth of this process, from a baseline taken after imports and connects.

On Linux the kernel's peak (VmHWM) is reset to the current RSS at the
baseline (``/proc/self/clear_refs``), so the growth is exactly the peak
reached during the measured code minus the RSS before it. Elsewhere it is
``ru_maxrss`` at the end minus ``ru_maxrss`` at the baseline.
"""

from __future__ import annotations

import gc
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_STATUS: Final = Path("/proc/self/status")
_CLEAR_REFS: Final = Path("/proc/self/clear_refs")
_RESET_PEAK: Final = "5"


@dataclass(frozen=True)
class Baseline:
    rss: int  # bytes
    peak_was_reset: bool


def start() -> Baseline:
    """Take the baseline: collect garbage, reset the peak if possible, note the RSS."""
    gc.collect()
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK)
        status = _read_status()
        return Baseline(rss=status["VmRSS"], peak_was_reset=True)
    except OSError:
        return Baseline(rss=_max_rss(), peak_was_reset=False)


def peak_growth(baseline: Baseline) -> int:
    """Return how far the RSS peak rose above the baseline, in bytes."""
    peak = _read_status()["VmHWM"] if baseline.peak_was_reset else _max_rss()
    return max(0, peak - baseline.rss)


def _read_status() -> dict[str, int]:
    values: dict[str, int] = {}
    for line in _STATUS.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) * 1024  # reported in kB
    return values


def _max_rss() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, kB elsewhere
