"""The header of a report: machine, library and server versions, date, scale and rounds."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Final

from benchmarks.scales import Scale

_PACKAGES: Final = (
    "SQLAlchemy",
    "psycopg",
    "PyMySQL",
    "aiosqlite",
    "asyncpg",
    "asyncmy",
    "greenlet",
    "advanced-alchemy",
    "alembic",
    "userstore",
)
_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[1]


def started() -> tuple[str, str]:
    """The date and the userstore commit, taken when the run starts (the code it imports)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), _git_commit()


def describe(
    scale: Scale, rounds: int, servers: dict[str, str], start: tuple[str, str], minutes: float
) -> list[tuple[str, str]]:
    """Return ``(label, value)`` lines describing this run.

    Args:
        scale: The run's sizes.
        rounds: Rounds per workload.
        servers: Each backend's server version.
        start: :func:`started`'s date and commit.
        minutes: How long the whole run took.
    """
    versions = [f"Python {platform.python_version()}"]
    versions += [f"{name} {_version(name)}" for name in _PACKAGES]
    date, commit = start
    return [
        ("Date", f"{date} (the whole run took {_duration(minutes)})"),
        ("Machine", f"{platform.platform()}; {_cpus()}; {_memory()}"),
        ("Versions", ", ".join(versions)),
        ("userstore commit", f"{commit} (at the start of the run)"),
        ("Servers", "; ".join(servers.values()) or "none"),
        ("Scale", _scale(scale)),
        ("Rounds", f"{rounds} (variants alternated within each round; median reported)"),
    ]


def _duration(minutes: float) -> str:
    return f"{minutes * 60:.0f} seconds" if minutes < 2 else f"{minutes:.0f} minutes"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpus() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = f" ({line.partition(':')[2].strip()})"
                break
    except OSError:
        model = f" ({platform.processor()})" if platform.processor() else ""
    return f"{os.cpu_count()} CPUs{model}"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB memory"
    except OSError:
        pass
    return "memory unknown"


def _git_commit() -> str:
    try:
        completed = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=_REPOSITORY_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return completed.stdout.strip()


def _scale(scale: Scale) -> str:
    return (
        f"{scale.name}: W1 {scale.insert_rows:,} rows; W2 {scale.gets:,} gets of "
        f"{scale.get_table_rows:,} users; W3 {scale.units:,} units; W4 {scale.read_rows:,} rows; "
        f"W5 {scale.upsert_rows:,} rows"
    )
