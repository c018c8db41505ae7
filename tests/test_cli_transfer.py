"""``userstore import`` and ``userstore export`` on every backend: formats, modes, errors, files."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from sqlalchemy import URL, Engine, text

from tests.databases import stored_users
from tests.test_cli_readme import _session
from userstore.cli import main, transfer

ENTRY_POINT: Final = Path(sys.executable).parent / "userstore"

# Every kind of name the rules allow that a CSV or JSON file could garble.
AWKWARD_NAMES: Final = (
    "Jenny",
    "o'brien",
    'say "hi"',
    '"',
    '""',
    ",",
    "a,b",
    "a, b",
    " leading",
    "trailing ",
    "  both  ",
    " ",
    "Zoë",
    "Ångström",
    "日本語の名前",
    "emoji 🎉",
    "👩‍👩‍👧‍👦",
    "12345",
    "-7",
    "0",
    "1e5",
    "3.14",
    "null",
    "NULL",
    "\\N",
    "back\\slash",
    "semi;colon",
    "=SUM(A1)",
    "#not a comment",
    "line\u2028separator",
    "rtl \u200f mark",
    "e\u0301 combining",
    '{"json": 1}',
    "x" * 255,
    "🎉" * 255,
)
NUMBERS: Final = (None, 0, -1, 1, -(2**31), 2**31 - 1, 8675309)


@dataclass
class Outcome:
    """What one command did: its exit status and what it printed."""

    status: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one error line (asserting there is exactly one, and no traceback)."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("userstore: "), self.err
        return lines[0]


Run = Callable[..., Outcome]


@pytest.fixture
def url(database_url: URL, plain_engine: Engine) -> str:
    """The backend's migrated database, with no users."""
    with plain_engine.begin() as connection:
        connection.execute(text("DELETE FROM users"))
    return database_url.render_as_string(hide_password=False)


@pytest.fixture
def userstore(url: str, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the command line in this process on the test's database."""

    def run(*argv: str | Path) -> Outcome:
        capsys.readouterr()
        try:
            status = main(["--url", url, *map(str, argv)])
        except SystemExit as exc:  # SIGTERM: 143, the handler's own exit
            status = int(exc.code or 0)
        captured = capsys.readouterr()
        return Outcome(status, captured.out, captured.err)

    return run


def _entry_point(url: str, *argv: str | Path, stdin: bytes = b"", cwd: Path) -> Outcome:
    """Run the installed ``userstore`` script, standard input and output being pipes."""
    result = subprocess.run(
        [str(ENTRY_POINT), "--url", url, *map(str, argv)],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    return Outcome(
        result.returncode,
        result.stdout.decode("utf-8", "surrogateescape"),
        result.stderr.decode("utf-8", "surrogateescape"),
    )


def _store(engine: Engine, *users: tuple[str, int | None]) -> None:
    with engine.begin() as connection:
        for name, number in users:
            connection.execute(
                text("INSERT INTO users (name, number) VALUES (:name, :number)"),
                {"name": name, "number": number},
            )


def _csv_file(path: Path, *lines: str, header: str = "name,number") -> Path:
    path.write_text("".join(f"{line}\n" for line in (header, *lines)), encoding="utf-8")
    return path


def _rejects(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as file:
        return list(csv.DictReader(file))


def _awkward_users() -> dict[str, int | None]:
    return {name: NUMBERS[index % len(NUMBERS)] for index, name in enumerate(AWKWARD_NAMES)}


def _no_leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".partial"))


# -- the round trip --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_into_an_empty_database_gives_back_every_awkward_name(
    fmt: str, userstore: Run, plain_engine: Engine, database_url: URL, tmp_path: Path
):
    users = _awkward_users()
    _store(plain_engine, *users.items())
    exported = tmp_path / f"users.{fmt}"

    assert userstore("export", exported).status == 0
    with plain_engine.begin() as connection:
        connection.execute(text("DELETE FROM users"))
    imported = userstore("import", exported, "--json")

    assert imported.status == 0, imported.err
    assert json.loads(imported.out)["inserted"] == len(users)
    assert stored_users(database_url) == users


def test_export_writes_users_in_code_point_order_with_a_header_and_empty_fields_for_null(
    userstore: Run, plain_engine: Engine, tmp_path: Path
):
    _store(plain_engine, ("b", 2), ("B", None), ("a", -1), ("é", 0), ("a,b", 3))

    assert userstore("export", tmp_path / "users.csv").status == 0

    assert (tmp_path / "users.csv").read_bytes() == (
        b'name,number\nB,\na,-1\n"a,b",3\nb,2\n\xc3\xa9,0\n'
    )


def test_export_as_json_lines_writes_one_object_per_user_with_null_for_no_number(
    userstore: Run, plain_engine: Engine, tmp_path: Path
):
    _store(plain_engine, ("Zoë", None), ("ada", 7))

    assert userstore("export", tmp_path / "users.ndjson").status == 0

    lines = (tmp_path / "users.ndjson").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"name": "Zoë", "number": None},
        {"name": "ada", "number": 7},
    ]
    assert "Zoë" in lines[0]  # UTF-8 as is, not \\u escapes


# -- insert: all or nothing, naming the line -------------------------------------


def test_an_import_inserts_every_row_and_reports_the_counts(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "ada,1", "bob,", '"c,d",-3')

    outcome = userstore("import", source, "--json")

    assert outcome.status == 0
    summary = json.loads(outcome.out)
    assert {key: summary[key] for key in ("rows", "inserted", "updated", "unchanged")} == {
        "rows": 3,
        "inserted": 3,
        "updated": 0,
        "unchanged": 0,
    }
    assert (summary["rejected"], summary["mode"], summary["format"]) == (0, "insert", "csv")
    assert stored_users(database_url) == {"ada": 1, "bob": None, "c,d": -3}


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        ("zed,twelve", "number must be an integer or empty, got 'twelve'"),
        ("zed, 12", "number must be an integer or empty, got ' 12'"),
        ("zed,+12", "number must be an integer or empty, got '+12'"),
        ("zed,1_000", "number must be an integer or empty, got '1_000'"),
        ("zed,١٢", "number must be an integer or empty, got '١٢'"),
        ("zed,5.0", "number must be an integer or empty, got '5.0'"),
        ("zed,2147483648", "number must be between -2147483648 and 2147483647, got 2147483648"),
        (
            "zed," + "1" * 5000,
            "number must be between -2147483648 and 2147483647, got 1111111111",
        ),
        (
            "zed,-000000000000000000002147483649",
            "number must be between -2147483648 and 2147483647, got -2147483649",
        ),
        (",5", "name must not be empty"),
        ("z" * 256 + ",5", "name must be at most 255 characters, got 256"),
        ("zed,5,extra", "expected 2 fields (name,number), got 3"),
        ("zed", "expected 2 fields (name,number), got 1"),
        ('"zed"x,5', "malformed CSV"),
    ],
)
def test_an_import_with_a_bad_row_writes_nothing_and_names_its_line(
    bad_row: str, reason: str, userstore: Run, database_url: URL, tmp_path: Path
):
    good = [f"user{index},{index}" for index in range(7)]
    source = _csv_file(tmp_path / "users.csv", *good, bad_row, "last,1")

    outcome = userstore("import", source, "--batch-size", "3")  # two batches went in first

    assert outcome.status == 7
    assert outcome.error.startswith(f"userstore: line 9: {reason}")
    assert outcome.error.endswith("nothing was imported")
    assert stored_users(database_url) == {}


def test_an_import_of_a_name_already_stored_writes_nothing_and_names_its_line(
    userstore: Run, plain_engine: Engine, database_url: URL, tmp_path: Path
):
    _store(plain_engine, ("taken", 1))
    source = _csv_file(tmp_path / "users.csv", "a,1", "b,2", "c,3", "taken,4", "d,5")

    outcome = userstore("import", source, "--batch-size", "2")

    assert outcome.status == 6
    assert outcome.error == (
        "userstore: line 5: a user named 'taken' is already stored; nothing was imported"
    )
    assert stored_users(database_url) == {"taken": 1}


@pytest.mark.parametrize("batch_size", ["2", "100"], ids=["across batches", "in one batch"])
def test_an_import_of_a_name_repeated_in_the_file_writes_nothing_and_names_both_lines(
    batch_size: str, userstore: Run, database_url: URL, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "a,1", "twice,2", "b,3", "c,4", "twice,5", "d,6")

    outcome = userstore("import", source, "--batch-size", batch_size)

    assert outcome.status == 6
    assert outcome.error == (
        "userstore: line 6: the name 'twice' repeats line 3; nothing was imported"
    )
    assert stored_users(database_url) == {}


def test_a_repeat_read_from_a_pipe_names_its_line_and_says_it_repeats_an_earlier_one(
    url: str, database_url: URL, tmp_path: Path
):
    rows = b"name,number\na,1\ntwice,2\nb,3\ntwice,4\n"

    outcome = _entry_point(
        url, "import", "-", "--format", "csv", "--batch-size", "2", stdin=rows, cwd=tmp_path
    )

    assert outcome.status == 6
    assert outcome.error == (
        "userstore: line 5: the name 'twice' repeats an earlier line; nothing was imported"
    )
    assert stored_users(database_url) == {}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", 'line 1: the file is empty; a CSV import starts "name,number"'),
        (
            b"Name,Number\nada,1\n",
            "line 1: the CSV header must be \"name,number\", got 'Name,Number'",
        ),
        (b"name\nada\n", "line 1: the CSV header must be \"name,number\", got 'name'"),
        (b"number,name\n1,ada\n", "line 1: the CSV header must be"),
    ],
    ids=["empty", "capitalised", "one column", "reordered"],
)
def test_a_csv_file_without_the_header_is_invalid_input_naming_line_1(
    content: bytes, error: str, userstore: Run, tmp_path: Path
):
    source = tmp_path / "users.csv"
    source.write_bytes(content)

    outcome = userstore("import", source)

    assert outcome.status == 7
    assert outcome.error.startswith(f"userstore: {error}")
    assert outcome.error.endswith("; nothing was imported")


def test_a_byte_order_mark_crlf_line_ends_and_blank_lines_are_tolerated(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = tmp_path / "excel.csv"
    source.write_bytes(b"\xef\xbb\xbfname,number\r\nada,1\r\n\r\nbob,\r\n")

    outcome = userstore("import", source, "--json")

    assert outcome.status == 0, outcome.err
    assert json.loads(outcome.out)["rows"] == 2
    assert stored_users(database_url) == {"ada": 1, "bob": None}


def test_bytes_that_are_not_utf8_are_an_invalid_row_naming_its_line(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = tmp_path / "latin1.csv"
    source.write_bytes(b"name,number\nada,1\nZo\xeb,2\n")

    outcome = userstore("import", source)

    assert outcome.status == 7
    assert outcome.error.startswith("userstore: line 3: name is not valid UTF-8")
    assert stored_users(database_url) == {}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"name": "zed", "number": 1.5}', "number must be an int or None, got float"),
        ('{"name": "zed", "number": "5"}', "number must be an int or None, got str"),
        ('{"name": "zed", "number": true}', "number must be an int or None, got bool"),
        ('{"name": 5, "number": 5}', "name must be a str, got int"),
        ('{"name": "zed", "number": 1, "extra": 2}', "unexpected keys 'extra'"),
        ('{"number": 1}', 'the object has no "name"'),
        ('["zed", 1]', 'expected a JSON object {"name": ..., "number": ...}, got an array'),
        ("null", 'expected a JSON object {"name": ..., "number": ...}, got null'),
        ('{"name": "dk", "name": "dk2", "number": 1}', "the key 'name' repeats in the object"),
        ('{"name": "dk", "\\u006eame": "dk2", "number": 1}', "the key 'name' repeats"),
        ('{"name": "dk", "number": 1, "number": 2}', "the key 'number' repeats"),
        (
            '{"name": "zed", "number": ' + "9" * 5000 + "}",
            "number must be between -2147483648 and 2147483647, got 9999",
        ),
        ('{"name": "zed", ', "not valid JSON"),
    ],
)
def test_a_json_lines_import_with_a_bad_line_writes_nothing_and_names_it(
    line: str, reason: str, userstore: Run, database_url: URL, tmp_path: Path
):
    source = tmp_path / "users.jsonl"
    good = [json.dumps({"name": f"user{index}", "number": index}) for index in range(4)]
    source.write_text("\n".join([*good, line, good[0]]) + "\n", encoding="utf-8")

    outcome = userstore("import", source, "--batch-size", "2")

    assert outcome.status == 7
    assert outcome.error.startswith(f"userstore: line 5: {reason}")
    assert stored_users(database_url) == {}


def test_a_json_lines_object_may_leave_out_the_number_and_blank_lines_are_skipped(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = tmp_path / "users.jsonl"
    source.write_text('{"name": "ada"}\n\n{"number": null, "name": "bob"}\n', encoding="utf-8")

    outcome = userstore("import", source, "--json")

    assert outcome.status == 0, outcome.err
    assert json.loads(outcome.out)["rows"] == 2
    assert stored_users(database_url) == {"ada": None, "bob": None}


# -- upsert ------------------------------------------------------------------------


def test_an_upsert_counts_every_row_as_inserted_updated_or_unchanged_the_last_repeat_winning(
    userstore: Run, plain_engine: Engine, database_url: URL, tmp_path: Path
):
    _store(plain_engine, ("same", 1), ("moved", 2), ("untouched", 3))
    source = _csv_file(
        tmp_path / "users.csv", "same,1", "moved,20", "new,5", "new,6", "new,6", "cleared,"
    )

    outcome = userstore("import", source, "--mode", "upsert", "--json")

    assert outcome.status == 0, outcome.err
    summary = json.loads(outcome.out)
    assert (summary["rows"], summary["inserted"], summary["updated"], summary["unchanged"]) == (
        6,
        2,
        2,
        2,
    )
    assert stored_users(database_url) == {
        "same": 1,
        "moved": 20,
        "untouched": 3,
        "new": 6,
        "cleared": None,
    }


def test_an_upsert_with_an_invalid_row_writes_nothing_and_names_its_line(
    userstore: Run, plain_engine: Engine, database_url: URL, tmp_path: Path
):
    _store(plain_engine, ("kept", 1))
    source = _csv_file(tmp_path / "users.csv", "kept,2", "new,3", "bad,x")

    outcome = userstore("import", source, "--mode", "upsert", "--batch-size", "1")

    assert outcome.status == 7
    assert outcome.error.startswith("userstore: line 4: number must be an integer or empty")
    assert stored_users(database_url) == {"kept": 1}


# -- --skip-invalid ------------------------------------------------------------------


def test_skip_invalid_imports_the_valid_rows_and_lists_each_rejected_one_with_line_and_reason(
    userstore: Run, plain_engine: Engine, database_url: URL, tmp_path: Path
):
    _store(plain_engine, ("stored", 1))
    source = _csv_file(
        tmp_path / "users.csv",
        "ada,1",  # line 2
        "bob,x",  # 3: not a number
        "stored,2",  # 4: already stored
        "ada,3",  # 5: repeats line 2 (another batch)
        ",4",  # 6: empty name
        '"two\nlines",5',  # 7-8: one record
        "cy,6,7",  # 9: three fields
        "cy,8",  # 10
        "cy,9",  # 11: repeats line 10 (same batch)
        "dee,2147483648",  # 12: out of range
    )
    rejects = tmp_path / "rejects.csv"

    outcome = userstore(
        "import", source, "--skip-invalid", "--rejects", rejects, "--batch-size", "3", "--json"
    )

    assert outcome.status == 0, outcome.err
    summary = json.loads(outcome.out)
    assert (summary["rows"], summary["inserted"], summary["rejected"]) == (10, 2, 8)
    assert summary["rejects"] == str(rejects)
    assert stored_users(database_url) == {"stored": 1, "ada": 1, "cy": 8}
    listed = _rejects(rejects)
    assert [(row["line"], row["record"]) for row in listed] == [
        ("3", "bob,x"),
        ("4", "stored,2"),
        ("5", "ada,3"),
        ("6", ",4"),
        ("7", '"two\nlines",5'),
        ("9", "cy,6,7"),
        ("11", "cy,9"),
        ("12", "dee,2147483648"),
    ]
    reasons = [row["reason"] for row in listed]
    assert reasons[0] == "number must be an integer or empty, got 'x'"
    assert reasons[1].startswith("a user of this name is already stored")
    assert reasons[2].startswith("a user of this name is already stored")  # from line 2
    assert reasons[3] == "name must not be empty"
    assert reasons[4] == "name must not contain control characters, found U+000A at position 3"
    assert reasons[5] == "expected 2 fields (name,number), got 3"
    assert reasons[6] == "the name repeats line 10"
    assert reasons[7].startswith("number must be between")


def test_skip_invalid_in_upsert_mode_rejects_only_invalid_rows(
    userstore: Run, plain_engine: Engine, database_url: URL, tmp_path: Path
):
    _store(plain_engine, ("stored", 1))
    source = tmp_path / "users.jsonl"
    source.write_text(
        '{"name": "stored", "number": 2}\n{"name": "bad", "number": 1.5}\nnot json\n'
        '{"name": "new", "number": null}\n',
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.csv"

    outcome = userstore(
        "import", source, "--mode", "upsert", "--skip-invalid", "--rejects", rejects, "--json"
    )

    assert outcome.status == 0, outcome.err
    summary = json.loads(outcome.out)
    assert (summary["inserted"], summary["updated"], summary["rejected"]) == (1, 1, 2)
    assert stored_users(database_url) == {"stored": 2, "new": None}
    assert [(row["line"], row["record"]) for row in _rejects(rejects)] == [
        ("2", '{"name": "bad", "number": 1.5}'),
        ("3", "not json"),
    ]


def test_a_rejected_row_that_is_not_utf8_is_listed_with_its_very_bytes(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = tmp_path / "users.csv"
    source.write_bytes(b"name,number\nZo\xeb,1\nada,2\n")
    rejects = tmp_path / "rejects.csv"

    outcome = userstore("import", source, "--skip-invalid", "--rejects", rejects)

    assert outcome.status == 0, outcome.err
    assert stored_users(database_url) == {"ada": 2}
    assert rejects.read_bytes() == b'line,reason,record\n2,name is not valid UTF-8,"Zo\xeb,1"\n'


def test_skip_invalid_with_nothing_rejected_still_writes_the_rejects_header(
    userstore: Run, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "ada,1")
    rejects = tmp_path / "rejects.csv"

    assert userstore("import", source, "--skip-invalid", "--rejects", rejects).status == 0

    assert rejects.read_text(encoding="utf-8") == "line,reason,record\n"


def test_an_existing_rejects_file_is_replaced_only_with_force(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "ada,x")
    rejects = tmp_path / "rejects.csv"
    rejects.write_text("keep me\n", encoding="utf-8")

    refused = userstore("import", source, "--skip-invalid", "--rejects", rejects)
    forced = userstore("import", source, "--skip-invalid", "--rejects", rejects, "--force")

    assert refused.status == 8
    assert "already exists; pass --force" in refused.error
    assert forced.status == 0
    assert [row["line"] for row in _rejects(rejects)] == ["2"]


# -- standard input and output ------------------------------------------------------


def test_an_import_from_standard_input_and_an_export_to_standard_output_round_trip(
    url: str, plain_engine: Engine, database_url: URL, tmp_path: Path
):
    users = _awkward_users()
    _store(plain_engine, *users.items())

    exported = _entry_point(url, "export", "-", "--format", "jsonl", cwd=tmp_path)
    with plain_engine.begin() as connection:
        connection.execute(text("DELETE FROM users"))
    imported = _entry_point(
        url, "import", "-", "--format", "jsonl", stdin=exported.out.encode(), cwd=tmp_path
    )

    assert exported.status == 0, exported.err
    assert imported.status == 0, imported.err
    assert exported.out.count("\n") == len(users)  # the data alone
    assert exported.err.startswith(f"exported {len(users)} users to standard output in ")
    assert imported.out.startswith(f"imported {len(users)} rows from standard input in ")
    assert stored_users(database_url) == users


def test_rejects_may_go_to_standard_output_and_the_summary_then_goes_to_standard_error(
    url: str, database_url: URL, tmp_path: Path
):
    rows = b"name,number\nada,1\nbob,x\n"

    outcome = _entry_point(
        url,
        "import",
        "-",
        "--format",
        "csv",
        "--skip-invalid",
        "--rejects",
        "-",
        stdin=rows,
        cwd=tmp_path,
    )

    assert outcome.status == 0, outcome.err
    assert (
        outcome.out
        == 'line,reason,record\n3,"number must be an integer or empty, got \'x\'","bob,x"\n'
    )
    assert outcome.err.startswith("imported 2 rows from standard input")
    assert stored_users(database_url) == {"ada": 1}


@pytest.mark.parametrize("command", ["import", "export"])
def test_standard_input_or_output_without_a_format_is_a_usage_error(command: str, userstore: Run):
    outcome = userstore(command, "-")

    assert outcome.status == 2
    assert "--format" in outcome.error


# -- files ---------------------------------------------------------------------------


def test_export_refuses_to_replace_an_existing_file_unless_forced(
    userstore: Run, plain_engine: Engine, tmp_path: Path
):
    _store(plain_engine, ("ada", 1))
    target = tmp_path / "users.csv"
    target.write_text("precious\n", encoding="utf-8")

    refused = userstore("export", target)
    assert refused.status == 8
    assert refused.error == (
        f"userstore: the export file {str(target)!r} already exists; pass --force to replace it"
    )
    assert target.read_text(encoding="utf-8") == "precious\n"

    assert userstore("export", target, "--force").status == 0
    assert target.read_text(encoding="utf-8") == "name,number\nada,1\n"
    assert _no_leftovers(tmp_path) == []


def test_an_export_that_fails_midway_leaves_no_file_and_no_temporary_one(
    userstore: Run, plain_engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    _store(plain_engine, *((f"user{index:03d}", index) for index in range(50)))
    pages = 0
    original = transfer.RowWriter.write

    def fail_on_the_third_page(self: transfer.RowWriter, pairs: object) -> None:
        nonlocal pages
        pages += 1
        if pages == 3:
            raise OSError(28, "No space left on device")
        original(self, pairs)  # type: ignore[arg-type]

    monkeypatch.setattr(transfer.RowWriter, "write", fail_on_the_third_page)

    outcome = userstore("export", tmp_path / "users.csv", "--batch-size", "10")

    assert outcome.status == 8
    assert outcome.error == (
        f"userstore: cannot write {str(tmp_path / 'users.csv')!r}: No space left on device"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def _stopped_on_the_second_batch(
    command: str,
    stop: Callable[[], None],
    userstore: Run,
    engine: Engine,
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Outcome:
    """Run an import or export of 50 rows that ``stop()`` halts on its second batch of 10.

    Asserts that it wrote nothing: the users are as they were, and the directory of its output
    file (an export's file, an import's rejects file) is still empty.
    """
    if command == "export":
        _store(engine, *((f"user{index:03d}", index) for index in range(50)))
    source = _csv_file(tmp_path / "users.csv", *(f"new{index},{index}" for index in range(50)))
    before = stored_users(database_url)
    calls = 0
    original = transfer.progress.Progress.advance

    def stop_on_the_second_batch(self: object, rows: int, done: int | None = None) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            stop()
        original(self, rows, done)  # type: ignore[arg-type]

    monkeypatch.setattr(transfer.progress.Progress, "advance", stop_on_the_second_batch)
    target = tmp_path / "out" / "users.csv"
    target.parent.mkdir()
    argv = (
        ["import", source, "--skip-invalid", "--rejects", target]
        if command == "import"
        else ["export", target]
    )

    outcome = userstore(*argv, "--batch-size", "10")

    assert stored_users(database_url) == before
    assert list(target.parent.iterdir()) == []
    return outcome


@pytest.mark.parametrize("command", ["import", "export"])
def test_ctrl_c_midway_exits_130_and_writes_nothing(
    command: str,
    userstore: Run,
    plain_engine: Engine,
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    def interrupt() -> None:
        raise KeyboardInterrupt

    outcome = _stopped_on_the_second_batch(
        command, interrupt, userstore, plain_engine, database_url, monkeypatch, tmp_path
    )

    assert outcome.status == 130
    assert outcome.error.startswith("userstore: interrupted")


def test_a_file_that_cannot_be_read_exits_8_naming_it(userstore: Run, tmp_path: Path):
    missing = userstore("import", tmp_path / "missing.csv")
    directory = userstore("import", tmp_path, "--format", "csv")

    assert missing.status == 8
    assert missing.error == (
        f"userstore: cannot read {str(tmp_path / 'missing.csv')!r}: No such file or directory; "
        "nothing was imported"
    )
    assert directory.status == 8


def test_an_export_into_a_missing_directory_exits_8_and_creates_nothing(
    userstore: Run, tmp_path: Path
):
    outcome = userstore("export", tmp_path / "missing" / "users.csv")

    assert outcome.status == 8
    assert "No such file or directory" in outcome.error
    assert not (tmp_path / "missing").exists()


def test_an_export_to_a_device_writes_in_place_without_force(userstore: Run, plain_engine: Engine):
    _store(plain_engine, ("ada", 1))

    assert userstore("export", os.devnull, "--format", "csv").status == 0

    assert Path(os.devnull).is_char_device()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["import", "users.txt"], "cannot tell the format of 'users.txt'"),
        (["export", "users"], "cannot tell the format of 'users'"),
        (["import", "users.csv", "--skip-invalid"], "--skip-invalid needs --rejects FILE"),
        (["import", "users.csv", "--rejects", "r.csv"], "--rejects goes with --skip-invalid"),
        (["import", "users.csv", "--force"], "--force replaces an existing --rejects file"),
        (["import", "users.csv", "--batch-size", "0"], "--batch-size"),
        (["import", "users.csv", "--mode", "merge"], "--mode"),
    ],
)
def test_bad_options_are_usage_errors_before_any_file_or_database_is_touched(
    argv: list[str], message: str, userstore: Run
):
    outcome = userstore(*argv)

    assert outcome.status == 2
    assert message in outcome.error


def test_the_format_option_wins_over_the_extension(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = tmp_path / "users.txt"
    source.write_text('{"name": "ada", "number": 1}\n', encoding="utf-8")

    assert userstore("import", source, "--format", "jsonl").status == 0

    assert stored_users(database_url) == {"ada": 1}


# -- output ----------------------------------------------------------------------------


def test_off_a_terminal_an_import_prints_one_summary_line_and_nothing_on_stderr(
    userstore: Run, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "ada,1", "bob,2")

    outcome = userstore("import", source)

    assert outcome.status == 0
    assert outcome.err == ""
    (line,) = outcome.out.splitlines()
    assert line.startswith(f"imported 2 rows from {str(source)!r} in ")
    assert line.endswith(" s: 2 inserted, 0 updated, 0 unchanged, 0 rejected")


def test_quiet_prints_nothing_at_all(userstore: Run, plain_engine: Engine, tmp_path: Path):
    source = _csv_file(tmp_path / "users.csv", "ada,1")

    imported = userstore("import", source, "--quiet")
    exported = userstore("export", tmp_path / "out.csv", "--quiet")

    assert (imported.status, imported.out, imported.err) == (0, "", "")
    assert (exported.status, exported.out, exported.err) == (0, "", "")


def test_the_export_summary_as_json_is_one_document(
    userstore: Run, plain_engine: Engine, tmp_path: Path
):
    _store(plain_engine, ("ada", 1), ("bob", 2))

    outcome = userstore("export", tmp_path / "users.jsonl", "--json")

    summary = json.loads(outcome.out)
    assert set(summary) == {"command", "file", "format", "exported", "elapsed_seconds"}
    assert (summary["command"], summary["format"], summary["exported"]) == ("export", "jsonl", 2)


# -- README ----------------------------------------------------------------------------


def _readme_transfer_block() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Import and export\n", 1)[1].split("\n## ", 1)[0]
    (block,) = [part.split("```", 1)[0] for part in section.split("```console\n")[1:]]
    return block


def test_the_readme_import_and_export_session_prints_what_it_shows(tmp_path: Path):
    env = {
        **os.environ,
        "PATH": f"{ENTRY_POINT.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "USERSTORE_DATABASE_URL": f"sqlite:///{tmp_path / 'readme.db'}",
    }
    elapsed = __import__("re").compile(r"in \d+\.\d\d s")
    for command, shown in _session(_readme_transfer_block()):
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        assert elapsed.sub("in <t> s", result.stdout) == elapsed.sub("in <t> s", shown), command


def test_reading_a_csv_batch_keeps_its_rows_in_file_order(tmp_path: Path):
    from userstore.cli.reading import row_reader

    data = io.BytesIO(b'name,number\na,1\n\nb,\n"c\nd",2\ne,3\n')
    reader = row_reader(data, "csv", 10)

    (batch,) = reader.batches()

    assert [(pair, batch.line(index)) for index, pair in enumerate(batch.pairs)] == [
        (("a", 1), 2),
        (("b", None), 4),
        (("c\nd", 2), 5),
        (("e", 3), 7),
    ]
    assert batch.rows == 4


def test_the_duplicate_named_is_the_first_in_file_order_whether_stored_or_repeated(
    userstore: Run, plain_engine: Engine, database_url: URL, tmp_path: Path
):
    _store(plain_engine, ("Z stored", 1), ("A stored", 2))
    source = _csv_file(
        tmp_path / "users.csv", "a,1", "b,2", "c,3", "b,4", "Z stored,5", "A stored,6"
    )

    for batch_size in ("2", "3", "100"):
        outcome = userstore("import", source, "--batch-size", batch_size)

        assert outcome.status == 6
        assert outcome.error == (
            "userstore: line 5: the name 'b' repeats line 3; nothing was imported"
        ), batch_size
    assert stored_users(database_url) == {"Z stored": 1, "A stored": 2}


def test_a_quoted_field_running_past_a_batch_keeps_every_later_line_number_right(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "a,1", '"b', 'c",2', "d,3", "e,x")
    rejects = tmp_path / "rejects.csv"

    outcome = userstore(
        "import", source, "--skip-invalid", "--rejects", rejects, "--batch-size", "2"
    )

    assert outcome.status == 0, outcome.err
    assert stored_users(database_url) == {"a": 1, "d": 3}
    assert [(row["line"], row["record"]) for row in _rejects(rejects)] == [
        ("3", '"b\nc",2'),
        ("6", "e,x"),
    ]


def test_a_carriage_return_that_does_not_end_a_line_is_a_malformed_row(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = tmp_path / "users.csv"
    source.write_bytes(b"name,number\nada,1\nb\rob,2\n")

    outcome = userstore("import", source)

    assert outcome.status == 7
    assert outcome.error.startswith(
        "userstore: line 3: malformed CSV: a carriage return (\\r) that does not end the line"
    )
    assert stored_users(database_url) == {}


def test_a_json_lines_file_may_start_with_a_byte_order_mark(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = tmp_path / "users.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"name": "ada", "number": 1}\r\n')

    assert userstore("import", source).status == 0

    assert stored_users(database_url) == {"ada": 1}


# -- what a black-box review found ------------------------------------------------------


class _ClosedPipe(io.RawIOBase):
    """A standard output whose reader went away."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def _broken_stdout() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedWriter(_ClosedPipe()), encoding="utf-8")


@pytest.mark.parametrize(
    "command",
    [
        "export - --format csv >&-",
        "import - --format csv <&-",
        "import users.csv --skip-invalid --rejects - >&-",
    ],
)
def test_a_closed_standard_input_or_output_is_exit_8_in_one_line(
    command: str, url: str, database_url: URL, tmp_path: Path
):
    _csv_file(tmp_path / "users.csv", "ada,1", "bob,x")

    result = subprocess.run(
        ["bash", "-c", f"{ENTRY_POINT} --url '{url}' {command}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    outcome = Outcome(result.returncode, result.stdout, result.stderr)
    assert outcome.status == 8, outcome.err
    assert "closed" in outcome.error
    if command.startswith("import"):
        assert outcome.error.endswith("; nothing was imported")
    assert stored_users(database_url) == {}


def test_a_summary_that_cannot_be_written_after_the_commit_says_the_rows_were_committed(
    userstore: Run, database_url: URL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "ada,1", "bob,2")
    monkeypatch.setattr(sys, "stdout", _broken_stdout())

    outcome = userstore("import", source)

    assert outcome.status == 8
    assert outcome.error.startswith(
        "userstore: imported 2 rows (committed), but standard output "
    ), outcome.error
    assert stored_users(database_url) == {"ada": 1, "bob": 2}


def test_rejects_that_cannot_be_written_to_standard_output_say_nothing_was_imported(
    userstore: Run, database_url: URL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "ada,1", "bob,x")
    monkeypatch.setattr(sys, "stdout", _broken_stdout())

    outcome = userstore("import", source, "--skip-invalid", "--rejects", "-")

    assert outcome.status == 8
    assert outcome.error == (
        "userstore: standard output was closed before all was written; nothing was imported"
    )
    assert stored_users(database_url) == {}


def test_numbers_may_have_leading_zeros_as_with_users_set(
    userstore: Run, database_url: URL, tmp_path: Path
):
    source = _csv_file(
        tmp_path / "users.csv",
        "one,00000000000000000001",
        "minus,-0000000000000000000000000000000002147483648",
        "zero,0000",
    )

    outcome = userstore("import", source)

    assert outcome.status == 0, outcome.err
    assert stored_users(database_url) == {"one": 1, "minus": -(2**31), "zero": 0}


class _ForgetfulLookup:
    """Makes the --skip-invalid lookup miss "b", as if another session stored it just after."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, times: int) -> None:
        self.misses = 0
        original = transfer._Importer._stored_among

        def lookup(importer: transfer._Importer, names: list[str]) -> set[str]:
            stored = original(importer, names)
            if "b" in stored and self.misses < times:
                self.misses += 1
                stored.discard("b")
            return stored

        monkeypatch.setattr(transfer._Importer, "_stored_among", lookup)


def test_skip_invalid_rejects_a_name_another_session_stored_after_its_lookup(
    userstore: Run,
    plain_engine: Engine,
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    _store(plain_engine, ("b", 7))  # stored "meanwhile": the first lookup misses it
    lookups = _ForgetfulLookup(monkeypatch, times=1)
    source = _csv_file(tmp_path / "users.csv", "a,1", "d,x", "b,2", "c,3")
    rejects = tmp_path / "rejects.csv"

    outcome = userstore(  # one row a batch: line 3's reject is written before the race
        "import", source, "--skip-invalid", "--rejects", rejects, "--json", "--batch-size", "1"
    )

    assert outcome.status == 0, outcome.err
    summary = json.loads(outcome.out)
    assert (summary["rows"], summary["inserted"], summary["rejected"]) == (4, 2, 2)
    assert stored_users(database_url) == {"a": 1, "b": 7, "c": 3}
    assert [(row["line"], row["record"]) for row in _rejects(rejects)] == [
        ("3", "d,x"),
        ("4", "b,2"),
    ]
    assert "already stored" in _rejects(rejects)[1]["reason"]
    assert lookups.misses == 1  # the whole import ran again, and then found "b"


def test_skip_invalid_from_a_pipe_that_meets_such_a_race_fails_naming_the_line(
    userstore: Run,
    plain_engine: Engine,
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
):
    _store(plain_engine, ("b", 7))
    _ForgetfulLookup(monkeypatch, times=1)
    data = b"name,number\na,1\nb,2\nc,3\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))

    outcome = userstore("import", "-", "--format", "csv", "--skip-invalid", "--rejects", "-")

    assert outcome.status == 6
    assert outcome.error.startswith(
        "userstore: line 3: a user named 'b' was stored by another session while this import ran"
    )
    assert "nothing was imported" in outcome.error
    assert outcome.out == ""  # no rejects header for an import that wrote nothing
    assert stored_users(database_url) == {"b": 7}


def test_skip_invalid_gives_up_after_a_few_runs_that_each_meet_a_race(
    userstore: Run,
    plain_engine: Engine,
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    _store(plain_engine, ("b", 7))
    lookups = _ForgetfulLookup(monkeypatch, times=1_000)
    source = _csv_file(tmp_path / "users.csv", "a,x", "b,2")
    rejects = tmp_path / "rejects.csv"

    outcome = userstore("import", source, "--skip-invalid", "--rejects", rejects)

    assert outcome.status == 6
    assert outcome.error.startswith("userstore: line 3: a user named 'b' was stored")
    assert "nothing was imported" in outcome.error
    assert lookups.misses == transfer._ATTEMPTS
    assert stored_users(database_url) == {"b": 7}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["users.csv"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_line_too_long_is_an_invalid_row_naming_it_and_later_lines_still_count(
    fmt: str, userstore: Run, database_url: URL, tmp_path: Path
):
    long_name = "x" * 1_000_000
    if fmt == "csv":
        lines = ["name,number", "ada,1", f"{long_name},2", "bob,3"]
    else:
        lines = [json.dumps({"name": n, "number": i}) for i, n in enumerate(["ada", long_name])]
        lines.insert(0, "")
        lines.append(json.dumps({"name": "bob", "number": 3}))
    source = tmp_path / f"users.{fmt}"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rejects = tmp_path / "rejects.csv"

    failed = userstore("import", source)
    skipped = userstore("import", source, "--skip-invalid", "--rejects", rejects)

    assert failed.status == 7
    assert failed.error == (
        "userstore: line 3: the line is longer than 65,536 bytes; nothing was imported"
    )
    assert skipped.status == 0, skipped.err
    assert set(stored_users(database_url)) == {"ada", "bob"}
    (reject,) = _rejects(rejects)
    assert reject["line"] == "3"
    assert reject["reason"] == "the line is longer than 65,536 bytes"
    assert len(reject["record"]) < 300  # its start, not the whole line


def test_a_quoted_field_longer_than_the_csv_limit_is_said_without_internals(
    userstore: Run, tmp_path: Path
):
    chunk = "y" * 60_000
    source = _csv_file(tmp_path / "users.csv", "ada,1", f'"{chunk}', chunk, f'{chunk}",2')

    outcome = userstore("import", source)

    assert outcome.status == 7
    assert outcome.error.startswith("userstore: line 3: malformed CSV: a field is longer than")
    assert "field limit" not in outcome.error


def test_a_header_that_is_not_utf8_is_shown_as_bytes_and_said(userstore: Run, tmp_path: Path):
    source = tmp_path / "users.csv"
    source.write_bytes(b"\xe4\xff,number\nada,1\n")

    outcome = userstore("import", source)

    assert outcome.status == 7
    assert outcome.error == (
        "userstore: line 1: the CSV header must be \"name,number\", got '\\xe4\\xff,number' "
        "(not UTF-8); nothing was imported"
    )


def test_one_row_or_one_user_is_said_in_the_singular(
    userstore: Run, plain_engine: Engine, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "ada,1")

    imported = userstore("import", source)
    exported = userstore("export", tmp_path / "out.csv")

    assert imported.out.startswith(f"imported 1 row from {str(source)!r} in ")
    assert exported.out.startswith(f"exported 1 user to {str(tmp_path / 'out.csv')!r} in ")


@pytest.mark.skipif(not Path("/proc/version").is_file(), reason="needs Linux's /proc")
def test_an_export_over_a_file_whose_directory_takes_no_new_file_says_why(userstore: Run):
    outcome = userstore("export", "/proc/version", "--format", "csv", "--force")

    assert outcome.status == 8
    assert outcome.error.startswith(
        "userstore: cannot write '/proc/version': it is written to a temporary file in '/proc' "
        "first, then renamed, and that directory refuses a new file ("
    )


@pytest.mark.parametrize("command", ["import", "export"])
def test_sigterm_midway_exits_143_and_writes_nothing(
    command: str,
    userstore: Run,
    plain_engine: Engine,
    database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    def terminate() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    outcome = _stopped_on_the_second_batch(
        command, terminate, userstore, plain_engine, database_url, monkeypatch, tmp_path
    )

    assert outcome.status == 143
    assert outcome.error.startswith("userstore: terminated (SIGTERM); ")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_to_an_import_reading_a_pipe_leaves_no_partial_rejects_file(
    url: str, database_url: URL, tmp_path: Path
):
    process = subprocess.Popen(
        [
            *(str(ENTRY_POINT), "--url", url, "import", "-", "--format", "csv"),
            *("--skip-invalid", "--rejects", "rejects.csv"),
        ],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(b"name,number\nada,1\n")
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while not _no_leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the import is under way: its rejects file is open
    assert _no_leftovers(tmp_path), "the import did not start"

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    process.stdin.close()

    assert process.returncode == 143, err
    assert Outcome(143, out.decode(), err.decode()).error == (
        "userstore: terminated (SIGTERM); nothing was imported"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    assert stored_users(database_url) == {}


def test_a_rejects_file_that_cannot_take_its_name_after_the_commit_says_the_import_was_committed(
    userstore: Run, database_url: URL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    source = _csv_file(tmp_path / "users.csv", "ada,1", "bob,x")
    rejects = tmp_path / "rejects.csv"
    original = transfer.progress.Progress.advance

    def another_program_writes_the_rejects_file(
        self: object, rows: int, done: int | None = None
    ) -> None:
        rejects.write_text("someone else's\n", encoding="utf-8")
        original(self, rows, done)  # type: ignore[arg-type]

    monkeypatch.setattr(
        transfer.progress.Progress, "advance", another_program_writes_the_rejects_file
    )

    outcome = userstore("import", source, "--skip-invalid", "--rejects", rejects)

    assert outcome.status == 8
    assert outcome.error == (
        f"userstore: the import was committed, but {str(rejects)!r} appeared while it was "
        "being written; pass --force to replace it"
    )
    assert stored_users(database_url) == {"ada": 1}
    assert rejects.read_text(encoding="utf-8") == "someone else's\n"
    assert _no_leftovers(tmp_path) == []
