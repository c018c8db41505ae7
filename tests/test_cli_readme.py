"""README's "Command line" example session, run through the installed ``userstore`` script."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from userstore import migrations

README: Final = Path(__file__).parent.parent / "README.md"
ENTRY_POINT: Final = Path(sys.executable).parent / "userstore"
# Timestamps differ on every run: README's and the real ones are both masked, as README says.
TIMESTAMP: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
MASK: Final = "<ISO 8601 UTC timestamp>"


def _command_line_section() -> str:
    """README's "## Command line" section, up to its first subsection or the next section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Command line\n", 1)[1]
    return re.split(r"^##+ ", section, maxsplit=1, flags=re.MULTILINE)[0]


def _console_blocks(section: str) -> list[str]:
    return re.findall(r"^```console\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def _session(block: str) -> list[tuple[str, str]]:
    """The block's commands (``$ ...`` lines), each with the output lines under it."""
    steps: list[tuple[str, str]] = []
    for line in block.splitlines(keepends=True):
        if line.startswith("$ "):
            steps.append((line[2:].rstrip("\n"), ""))
        else:
            assert steps, f"output before any command: {line!r}"
            command, output = steps[-1]
            steps[-1] = (command, output + line)
    return steps


def _run_session(block: str, tmp_path: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Run each command in bash on a new SQLite database; return (expected, actual), masked."""
    path = f"{ENTRY_POINT.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    assert shutil.which("userstore", path=path) == str(ENTRY_POINT)  # the real entry point
    env = {
        **os.environ,
        "PATH": path,
        "USERSTORE_DATABASE_URL": f"sqlite:///{tmp_path / 'readme.db'}",
    }
    expected, actual = [], []
    for command, output in _session(block):
        assert command.startswith("userstore "), command
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            timeout=120,
            check=False,
        )
        expected.append((command, TIMESTAMP.sub(MASK, output)))
        actual.append((command, TIMESTAMP.sub(MASK, result.stdout)))
    return expected, actual


def test_readmes_command_line_session_prints_exactly_what_it_shows(tmp_path: Path):
    (block,) = _console_blocks(_command_line_section())

    expected, actual = _run_session(block, tmp_path)

    assert actual == expected


def test_readmes_session_exercises_every_users_command_json_and_an_error_status():
    (block,) = _console_blocks(_command_line_section())
    commands = [command for command, _ in _session(block)]

    for subcommand in ("add", "get", "list", "set", "delete", "count"):
        assert any(command.startswith(f"userstore users {subcommand} ") for command in commands)
    assert any("--json" in command for command in commands)
    assert any("exit status" in output for _, output in _session(block))


def test_the_check_passes_a_session_that_matches_and_fails_one_that_does_not(tmp_path: Path):
    shown = (
        f"$ userstore upgrade --quiet\n$ userstore current\n{migrations.head()}\n"
        '$ userstore downgrade base --quiet\n$ userstore users count || echo "exit status $?"\n'
    )
    error = "userstore: database schema is at revision <none>"

    expected, actual = _run_session(shown, tmp_path)

    assert actual[:3] == expected[:3]
    assert actual[1] == ("userstore current", f"{migrations.head()}\n")
    assert actual[3] != expected[3]  # README would show no output where there is some
    assert actual[3][1].startswith(error)
    assert actual[3][1].endswith("\nexit status 4\n")


def test_timestamps_are_masked_only_where_they_are_iso_8601_utc_with_microseconds():
    masked = TIMESTAMP.sub(MASK, "a 2026-11-25T23:00:00.125000+00:00 b 2026-11-25T23:00:00+00:00")

    assert masked == f"a {MASK} b 2026-11-25T23:00:00+00:00"
