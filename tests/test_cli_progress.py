"""The progress bar of ``userstore import`` and ``export``, seen through a pseudo-terminal.

The installed ``userstore`` script runs with its standard error on a pty, as
in an operator's terminal, and everything it draws there is read back.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Final

import pytest
from sqlalchemy import URL, Engine, text

ENTRY_POINT: Final = Path(sys.executable).parent / "userstore"
ROWS: Final = 150_000  # half a second at least: tqdm redraws up to ten times a second
BATCH: Final = "1000"  # 150 batches: many chances for the bar to redraw
# tqdm draws: "importing users.csv:  42%|████    | [00:01<00:01, 25,000 rows, 20,001 rows/s]"
PERCENT: Final = re.compile(r"(\d+)%\|")
ROWS_DONE: Final = re.compile(r"([\d,]+) rows")


@pytest.fixture
def url(database_url: URL, plain_engine: Engine) -> str:
    """The backend's migrated database, with no users."""
    with plain_engine.begin() as connection:
        connection.execute(text("DELETE FROM users"))
    return database_url.render_as_string(hide_password=False)


@pytest.fixture
def users_csv(tmp_path: Path) -> Path:
    path = tmp_path / "users.csv"
    lines = "".join(f"user{index:06d},{index}\n" for index in range(ROWS))
    path.write_text(f"name,number\n{lines}", encoding="utf-8")
    return path


def _on_a_terminal(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run the entry point with stderr on a pty; return its status, stdout and what the pty got."""
    return _command_on_a_terminal([str(ENTRY_POINT), *argv], cwd)


def _command_on_a_terminal(command: list[str], cwd: Path) -> tuple[int, str, str]:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    drawn = bytearray()
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            drawn += chunk
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out.decode("utf-8"), drawn.decode("utf-8", "replace")


def _states(drawn: str, pattern: re.Pattern[str]) -> list[int]:
    """The successive values the bar showed, one per redraw (tqdm starts each with a CR)."""
    values = []
    for frame in drawn.split("\r"):
        match = pattern.search(frame)
        if match:
            values.append(int(match.group(1).replace(",", "")))
    return values


def test_an_import_on_a_terminal_shows_a_bar_that_moves_forward(
    url: str, users_csv: Path, tmp_path: Path
):
    status, out, drawn = _on_a_terminal(
        ["--url", url, "import", str(users_csv), "--batch-size", BATCH], tmp_path
    )

    assert status == 0, drawn
    percents = _states(drawn, PERCENT)
    rows = _states(drawn, ROWS_DONE)
    assert len(set(percents)) >= 3, drawn  # several distinct states, not just start and end
    assert percents == sorted(percents), drawn
    assert len(set(rows)) >= 3, drawn
    assert rows == sorted(rows), drawn
    assert max(rows) <= ROWS
    assert "rows/s" in drawn
    assert re.search(r"<\d\d:\d\d", drawn), drawn  # time left
    assert "importing users.csv: " in drawn
    assert out.startswith(f"imported {ROWS:,} rows from ")  # the summary, on stdout


def test_an_export_on_a_terminal_shows_a_bar_against_the_user_count(
    url: str, users_csv: Path, tmp_path: Path
):
    assert _on_a_terminal(["--url", url, "import", str(users_csv), "--quiet"], tmp_path)[0] == 0

    status, out, drawn = _on_a_terminal(
        ["--url", url, "export", str(tmp_path / "out.csv"), "--batch-size", BATCH], tmp_path
    )

    assert status == 0, drawn
    percents = _states(drawn, PERCENT)
    assert len(set(percents)) >= 3, drawn
    assert percents == sorted(percents), drawn
    assert out.startswith(f"exported {ROWS:,} users to ")


def test_quiet_on_a_terminal_draws_no_bar(url: str, users_csv: Path, tmp_path: Path):
    status, out, drawn = _on_a_terminal(
        ["--url", url, "import", str(users_csv), "--quiet"], tmp_path
    )

    assert (status, out, drawn) == (0, "", "")


def test_off_a_terminal_an_import_prints_nothing_but_the_summary(
    url: str, users_csv: Path, tmp_path: Path
):
    result = subprocess.run(
        [str(ENTRY_POINT), "--url", url, "import", str(users_csv), "--batch-size", BATCH],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0
    assert result.stderr == ""
    assert re.fullmatch(
        rf"imported {ROWS:,} rows from '.*users\.csv' in \d+\.\d\d s: {ROWS:,} inserted, "
        r"0 updated, 0 unchanged, 0 rejected\n",
        result.stdout,
    )


def test_reading_from_a_pipe_the_bar_shows_rows_and_their_rate_without_a_percentage(
    url: str, users_csv: Path, tmp_path: Path
):
    pipeline = f"cat {users_csv} | {ENTRY_POINT} --url '{url}' import - --format csv"

    status, _, drawn = _command_on_a_terminal(
        ["bash", "-c", f"{pipeline} --batch-size {BATCH}"], tmp_path
    )

    assert status == 0, drawn
    rows = _states(drawn, ROWS_DONE)
    assert len(set(rows)) >= 3, drawn
    assert rows == sorted(rows)
    assert PERCENT.search(drawn) is None
