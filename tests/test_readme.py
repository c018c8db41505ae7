"""README.md stays true: its tour runs, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from userstore.db_errors import ERROR_RULES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_the_api_tour_runs_on_the_default_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("USERSTORE_DATABASE_URL", raising=False)
    (tour,) = _blocks("python")

    exec(compile(tour, "README.md", "exec"), {})

    assert (tmp_path / "userstore.db").exists()


def test_ci_runs_exactly_the_test_command_the_readme_gives():
    commands = _blocks("sh")[1].strip()
    test_command = commands.split(" && ")[-1]

    assert test_command.startswith("python -m pytest")
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_the_error_table_in_the_readme_lists_every_rule_in_the_code():
    rows = [line for line in README.splitlines() if line.startswith("| ")]
    for rule in ERROR_RULES:
        matching = [
            row
            for row in rows
            if f" {rule.code} |" in row
            and f"| {rule.meaning} |" in row
            and f"`{rule.maps_to.__name__}`" in row
            and f"`{rule.sqlalchemy_class.__name__}`" in row
        ]
        assert len(matching) == 1, rule
