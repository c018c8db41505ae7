"""README.md stays true: its tour runs, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from userstore.db_errors import ERROR_RULES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_blocks(language: str, section: str | None = None) -> list[str]:
    """The ``language`` code blocks of README.md, or of the text under one of its headings.

    A section runs from its ``##`` (or deeper) heading to the next heading of any level.
    """
    text = README
    if section is not None:
        match = re.search(
            rf"^##+ {re.escape(section)}\n(.*?)(?=^##+ |\Z)", README, flags=re.DOTALL | re.MULTILINE
        )
        assert match, f"README.md has no section {section!r}"
        text = match.group(1)
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def _extras(command: str) -> set[str]:
    """The extras of every ``-e '.[...]'`` install in ``command``."""
    return {e for found in re.findall(r"\.\[([\w,]+)\]", command) for e in found.split(",")}


def test_the_api_tour_runs_on_the_default_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("USERSTORE_DATABASE_URL", raising=False)
    (tour,) = readme_blocks("python", "A tour of the API")

    exec(compile(tour, "README.md", "exec"), {})

    assert (tmp_path / "userstore.db").exists()


def test_ci_runs_exactly_the_test_command_the_readme_gives():
    commands = readme_blocks("sh")[1].strip()
    test_command = commands.split(" && ")[-1]

    assert test_command.startswith("python -m pytest")
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_ci_installs_every_extra_the_readme_test_command_installs():
    install = readme_blocks("sh")[1].strip().split(" && ")[-2]
    ci_installs = [
        line
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if "pip install" in line and "lowest-versions" not in line
    ]

    assert install.startswith("pip install -e")
    assert _extras(install) >= {"postgresql", "mariadb", "asyncio", "test"}
    assert _extras(install) <= _extras(" ".join(ci_installs))


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
