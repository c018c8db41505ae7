"""The command line: the demo and the migration commands, with their exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from userstore import migrations
from userstore.cli import main


def test_python_m_userstore_replays_the_notebook_on_the_default_database_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("USERSTORE_DATABASE_URL", raising=False)
    for _ in range(2):  # the second run finds the first run's Jenny
        result = subprocess.run(
            [sys.executable, "-m", "userstore"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "INSERT INTO users (name, number) VALUES (?, ?)" in result.stdout
        assert "User(name=Jenny, number=8675309)" in result.stdout
        assert "jenny_from_db is jenny\nTrue" in result.stdout
    assert (tmp_path / "userstore.db").exists()


def test_the_migration_commands_move_and_report_the_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    assert main(["--url", url, "current"]) == 0
    assert capsys.readouterr().out.strip() == "<none>"
    assert main(["--url", url, "upgrade"]) == 0
    assert main(["--url", url, "check"]) == 0
    assert main(["--url", url, "downgrade", "0001_users"]) == 0
    assert main(["--url", url, "current"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0001_users"
    assert main(["--url", url, "demo", "--quiet"]) == 0
    assert migrations.current(url) == migrations.head()


def test_a_failing_command_prints_one_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    main(["--url", url, "upgrade", "0001_users"])

    assert main(["--url", url, "check"]) == 1
    assert "schema is at revision 0001_users" in capsys.readouterr().err
    assert main(["--url", url, "upgrade", "nope"]) == 1
