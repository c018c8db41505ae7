"""The command line: the demo and the migration commands, --help, and the exit codes."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import URL, make_url, text

from tests.cli_support import one_error_line, url_in_the_environment
from tests.databases import throwaway_database
from userstore import migrations
from userstore.cli import app, main
from userstore.demo import NOTEBOOK_URL
from userstore.urls import shown_url

IN_MEMORY_NOTE = "(in-memory database: gone when this command exits)"


def _rows(url: str | URL) -> list[tuple[Any, ...]]:
    """Every stored user, every column, read with plain SQLAlchemy."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text("SELECT * FROM users"))]
    finally:
        engine.dispose()


def _store(url: str | URL, *users: tuple[str, int | None]) -> None:
    """Store users with plain SQL, as an app that is not userstore might."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.begin() as connection:
            for name, number in users:
                connection.execute(
                    text("INSERT INTO users (name, number) VALUES (:name, :number)"),
                    {"name": name, "number": number},
                )
    finally:
        engine.dispose()


def test_a_bare_userstore_replays_the_notebook_in_memory_and_leaves_the_configured_database_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real = f"sqlite:///{tmp_path / 'real.db'}"
    migrations.upgrade(real)
    _store(real, ("Jenny", 5551234))
    rows_before = _rows(real)
    monkeypatch.setenv("USERSTORE_DATABASE_URL", real)

    for _ in range(2):  # nothing is left behind for a second run to trip over
        result = subprocess.run(
            [sys.executable, "-m", "userstore"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        # The notebook's In [2] showed Engine(sqlite:///:memory:); SQLAlchemy 2.1
        # renders that URL's database percent-encoded (sqlite:///%3Amemory%3A).
        assert f"Engine({make_url(NOTEBOOK_URL)!r})" in result.stdout
        assert "INSERT INTO users (name, number) VALUES (?, ?)" in result.stdout
        assert "User(name=Jenny, number=8675309)" in result.stdout
        assert "jenny_from_db is jenny\nTrue" in result.stdout

    assert not (tmp_path / "userstore.db").exists()
    assert _rows(real) == rows_before
    assert migrations.current(real) == migrations.head()


def test_the_demo_on_an_explicit_url_migrates_it_and_leaves_no_users_so_it_can_run_again(
    fresh_database_url: URL, capsys: pytest.CaptureFixture[str]
):
    url = fresh_database_url.render_as_string(hide_password=False)

    for _ in range(2):
        assert main(["--url", url, "demo", "--quiet"]) == 0
        out = capsys.readouterr().out
        assert "User(name=Jenny, number=8675309)" in out
        assert migrations.current(url) == migrations.head()
        assert _rows(url) == []


@pytest.mark.parametrize("revision", ["0001_users", "head"])
def test_the_demo_refuses_a_database_that_holds_users_and_changes_nothing(
    fresh_database_url: URL, revision: str, capsys: pytest.CaptureFixture[str]
):
    url = fresh_database_url.render_as_string(hide_password=False)
    migrations.upgrade(url, revision)
    _store(url, ("Jenny", 5551234), ("Tommy", None))
    at_revision = migrations.current(url)
    rows_before = _rows(url)
    capsys.readouterr()

    assert main(["--url", url, "demo", "--quiet"]) == 1

    assert "holds users" in one_error_line(capsys.readouterr().err)
    assert migrations.current(url) == at_revision  # not even migrated
    assert _rows(url) == rows_before


def test_the_migration_commands_move_and_report_the_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    (tmp_path / "cli.db").touch()  # an empty file is a database (current creates none)

    assert main(["--url", url, "current"]) == 0
    assert capsys.readouterr().out.strip() == "<none>"
    assert main(["--url", url, "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"at revision {migrations.head()}"
    assert main(["--url", url, "check"]) == 0
    assert main(["--url", url, "downgrade", "0001_users"]) == 0
    assert main(["--url", url, "current"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0001_users"
    assert main(["--url", url, "demo", "--quiet"]) == 0
    assert migrations.current(url) == migrations.head()


@pytest.mark.parametrize(
    "command",
    [["upgrade"], ["downgrade", "base"], ["current"], ["check"], ["demo"]],
    ids=" ".join,
)
def test_url_is_accepted_before_or_after_the_command_and_wins_over_the_environment(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    elsewhere = url_in_the_environment(tmp_path, monkeypatch)
    before = f"sqlite:///{tmp_path / 'before.db'}"
    after = f"sqlite:///{tmp_path / 'after.db'}"
    for url in (before, after):
        migrations.upgrade(url)

    assert main(["--url", before, *command, "--quiet"]) == 0
    assert main([*command, "--url", after, "--quiet"]) == 0

    assert not elsewhere.exists()
    assert capsys.readouterr().err == ""
    assert migrations.current(before) == migrations.current(after)


@pytest.mark.parametrize(
    "command",
    [["upgrade"], ["downgrade", "base"], ["check"], ["demo"]],
    ids=" ".join,
)
def test_quiet_is_accepted_before_or_after_every_command_and_silences_its_report(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    for i, argv in enumerate([["--quiet", *command], [*command, "--quiet"]]):
        url = f"sqlite:///{tmp_path / f'quiet{i}.db'}"
        migrations.upgrade(url)
        capsys.readouterr()

        assert main(["--url", url, *argv]) == 0

        out = capsys.readouterr().out
        if command == ["demo"]:
            assert "INSERT INTO" not in out  # no SQL echo; the cells still print
        else:
            assert out == ""


def test_current_prints_the_revision_even_when_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'current.db'}"
    migrations.upgrade(url)
    capsys.readouterr()

    assert main(["current", "--quiet", "--url", url]) == 0

    assert capsys.readouterr().out == f"{migrations.head()}\n"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_upgrade_on_an_in_memory_url_reports_the_revision_it_reached_and_that_it_is_gone(
    url: str, capsys: pytest.CaptureFixture[str]
):
    assert main(["--url", url, "upgrade"]) == 0
    assert capsys.readouterr().out == f"at revision {migrations.head()} {IN_MEMORY_NOTE}\n"

    assert main(["--url", url, "downgrade", "base"]) == 0
    assert capsys.readouterr().out == f"at revision <none> {IN_MEMORY_NOTE}\n"


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """Every command and subcommand's argv, the bare program first."""
    yield list(prefix)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from _commands(subparser, (*prefix, name))


def _exit_status_section(help_text: str) -> dict[int, str]:
    """The codes and meanings under "exit status:" in a --help text."""
    section = help_text.split("\nexit status:\n", 1)[1]
    statuses: dict[int, str] = {}
    for line in section.splitlines():
        match = re.fullmatch(r"  (\d+) +(.*)", line)
        if match:
            code = int(match[1])
            statuses[code] = match[2]
        elif line.startswith("      "):
            statuses[code] += " " + line.strip()
    return statuses


def _readme_exit_statuses() -> dict[int, str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Command line\n", 1)[1]
    section = re.split(r"^##+ ", section, maxsplit=1, flags=re.MULTILINE)[0]
    rows = re.findall(r"^\| (\d+) \| (.*) \|$", section, flags=re.MULTILINE)
    return {int(code): meaning.replace("`", "") for code, meaning in rows}


def test_every_exit_code_has_one_meaning_and_every_error_maps_to_one_of_them():
    constants = {
        value
        for name, value in vars(app).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    documented = [code for code, _ in app.EXIT_STATUSES]

    assert sorted(documented) == documented == sorted(constants)
    assert {code for _, code in app._EXIT_CODES} <= constants


def test_help_of_every_command_lists_every_exit_code_with_its_meaning(
    capsys: pytest.CaptureFixture[str],
):
    commands = list(_commands(app._parser()))
    assert ["users", "list"] in commands  # the walk reaches subcommands
    for argv in commands:
        capsys.readouterr()
        assert main([*argv, "--help"]) == 0, argv

        assert _exit_status_section(capsys.readouterr().out) == dict(app.EXIT_STATUSES), argv


def test_readmes_exit_status_table_says_what_help_says():
    assert _readme_exit_statuses() == dict(app.EXIT_STATUSES)


def test_current_and_the_migration_commands_print_one_json_document_with_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    (tmp_path / "cli.db").touch()

    assert main(["--url", url, "current", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"revision": None}
    assert main(["--url", url, "--json", "upgrade"]) == 0
    assert json.loads(capsys.readouterr().out) == {"revision": migrations.head()}
    assert main(["--url", url, "check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"revision": migrations.head(), "matches": True}
    assert main(["--url", url, "current", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) == {"revision": migrations.head()}
    assert main(["--url", url, "downgrade", "base", "--json", "--quiet"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv", [["--json"], ["demo", "--json"]], ids=" ".join)
def test_the_demo_refuses_json_with_exit_2_before_running(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'demo.db'}"

    assert main(["--url", url, *argv]) == 2

    assert "no --json output" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "demo.db").exists()


@pytest.mark.parametrize(
    "argv", [["frobnicate"], ["upgrade", "--bogus"], ["downgrade"], ["--url"]], ids=" ".join
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]):
    assert main(argv) == 2
    one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("url", ["nonsense://", "postgresql+psycopg2://x/y"])
def test_a_malformed_url_or_an_unsupported_driver_exits_2_with_one_line(
    url: str, capsys: pytest.CaptureFixture[str]
):
    assert main(["--url", url, "current"]) == 2

    one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "url", ["postgresql://postgres@127.0.0.1:1/test", "mariadb://root@127.0.0.1:1/test"]
)
@pytest.mark.parametrize("command", [["current"], ["upgrade"], ["demo"]], ids=" ".join)
def test_an_unreachable_server_exits_3_with_one_line(
    url: str, command: list[str], capsys: pytest.CaptureFixture[str]
):
    assert main(["--url", url, *command, "--quiet"]) == 3

    assert "127.0.0.1:1" in one_error_line(capsys.readouterr().err)


def test_a_sqlite_file_in_a_missing_directory_exits_3_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    missing = tmp_path / "missing"

    assert main(["--url", f"sqlite:///{missing / 'users.db'}", "upgrade"]) == 3

    one_error_line(capsys.readouterr().err)
    assert not missing.exists()


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_credentials_the_server_rejects_exit_3_with_one_line(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    with throwaway_database(backend, tmp_path) as url:
        stranger = url.set(username="userstore_no_such_user", password=None)

        assert main(["--url", stranger.render_as_string(), "current"]) == 3

    one_error_line(capsys.readouterr().err)


def test_check_on_a_database_behind_head_exits_4_naming_the_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrations.upgrade(url, "0001_users")
    capsys.readouterr()

    assert main(["--url", url, "check"]) == 4

    assert "schema is at revision 0001_users" in one_error_line(capsys.readouterr().err)


def test_check_on_a_drifted_schema_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrations.upgrade(url)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE users ADD COLUMN nickname VARCHAR(20)"))
    finally:
        engine.dispose()
    capsys.readouterr()

    assert main(["--url", url, "check"]) == 4

    assert "differs from userstore's models" in one_error_line(capsys.readouterr().err)


def test_an_unknown_revision_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    assert main(["--url", url, "upgrade", "nope"]) == 1

    assert "nope" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["check", "--json"], '{"revision": "%s", "matches": true}\n'),
        (["check", "--quiet"], ""),
        (["check"], "schema matches the models at revision %s\n"),
        (["upgrade", "--json"], '{"revision": "%s"}\n'),
    ],
    ids=" ".join,
)
def test_alembics_own_messages_stay_out_of_standard_output(
    argv: list[str], expected: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrations.upgrade(url)
    capfd.readouterr()

    assert main(["--url", url, *argv]) == 0

    # capfd: Alembic writes to the sys.stdout it found at import, which capsys misses.
    assert capfd.readouterr() == (expected.replace("%s", migrations.head()), "")


def test_migrations_check_prints_nothing_when_the_schema_matches(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'lib.db'}"
    migrations.upgrade(url)
    capfd.readouterr()

    migrations.check(url)

    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/test?password=hunter2",
        "postgresql://postgres:hunter2@127.0.0.1:1/test?connect_timeout=5&password=hunter2",
        "mariadb://root@127.0.0.1:1/test?password=hunter2",
        pytest.param(
            "mariadb://root@127.0.0.1:1/test?passwd=hunter2",
            marks=pytest.mark.filterwarnings("ignore:'passwd' is deprecated:DeprecationWarning"),
        ),
    ],
)
def test_a_password_in_the_urls_query_is_masked_in_messages(
    url: str, capsys: pytest.CaptureFixture[str]
):
    assert main(["--url", url, "current"]) == 3

    line = one_error_line(capsys.readouterr().err)
    assert "hunter2" not in line
    assert "=***" in line


def test_shown_url_masks_every_password_in_any_case_and_keeps_the_rest():
    shown = shown_url(
        "postgresql://u:secret@h/db?sslmode=require&PassWord=a&pwd=b&pwd=c&PASSWD=d&xpassword=e"
    )

    assert "secret" not in shown
    assert shown.startswith("postgresql://u:***@h/db?")
    assert sorted(shown.split("?", 1)[1].split("&")) == [
        "PASSWD=***",
        "PassWord=***",
        "pwd=***",
        "pwd=***",
        "sslmode=require",
        "xpassword=e",
    ]
