"""``userstore users ...`` on every backend: what it prints, stores and exits with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import pytest
import sqlalchemy
from sqlalchemy import URL, text

from tests.cli_support import one_error_line, url_in_the_environment
from tests.databases import migrated_database, stored_users
from userstore import UserRepository, create_engine, create_session_factory, migrations
from userstore.cli import main
from userstore.cli import users as users_cli
from userstore.errors import DatabaseError, TransientDatabaseError

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"
AWKWARD_NAMES = [
    "Jenny",
    "Smith, Jane",
    'she said "hi"',
    "O'Brien",
    "Zoë Ångström",
    "日本語の名前",
    "  leading spaces",
    "trailing spaces  ",
    " both ",
    "emoji 🎉👩‍💻",
    "-starts with a dash",
    "--looks-like-an-option",
    "-5",
    "a\\backslash; DROP TABLE users; --",
    "x" * 255,
]


@pytest.fixture(scope="module")
def module_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """A migrated database for this module's tests on the backend under test."""
    with migrated_database(backend, tmp_path_factory.mktemp(f"cli_users_{backend}")) as url:
        yield url


@pytest.fixture
def url(module_url: URL) -> str:
    """The module's database, emptied, as a string for --url."""
    engine = sqlalchemy.create_engine(module_url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM users"))
    finally:
        engine.dispose()
    return module_url.render_as_string(hide_password=False)


def _store(url: str, *users: tuple[str, int | None]) -> None:
    engine = create_engine(url)
    try:
        with create_session_factory(engine)() as session:
            repo = UserRepository(session)
            repo.add_many(users)
            repo.commit()
    finally:
        engine.dispose()


def _run(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--url", url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _utc(stamp: str) -> datetime:
    assert stamp.endswith("+00:00"), stamp
    assert len(stamp) == len("2026-11-25T23:00:00.000000+00:00"), stamp
    return datetime.fromisoformat(stamp)


def test_add_stores_the_user_and_get_shows_it_for_people_and_for_scripts(
    url: str, capsys: pytest.CaptureFixture[str]
):
    assert _run(capsys, url, "users", "add", "Jenny", "8675309") == (
        0,
        "added 'Jenny' (number 8675309)\n",
        "",
    )
    assert stored_users(sqlalchemy.make_url(url)) == {"Jenny": 8675309}

    code, out, err = _run(capsys, url, "users", "get", "Jenny")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == ["name     Jenny", "number   8675309"]
    assert lines[2].startswith("created  ")
    assert lines[3].startswith("updated  ")
    created = _utc(lines[2].removeprefix("created  "))

    code, out, _ = _run(capsys, url, "users", "get", "Jenny", "--json")
    document = json.loads(out)
    assert (code, out.count("\n")) == (0, 1)
    assert {k: document[k] for k in ("name", "number")} == {"name": "Jenny", "number": 8675309}
    assert _utc(document["created_at"]) == created == _utc(document["updated_at"])


def test_add_with_json_prints_the_stored_user_and_without_a_number_stores_none(
    url: str, capsys: pytest.CaptureFixture[str]
):
    code, out, _ = _run(capsys, url, "users", "add", "Tommy", "--json")
    document = json.loads(out)
    assert code == 0
    assert (document["name"], document["number"]) == ("Tommy", None)
    _utc(document["created_at"])

    assert _run(capsys, url, "users", "add", "Tina", "--no-number") == (
        0,
        "added 'Tina' (no number)\n",
        "",
    )
    assert stored_users(sqlalchemy.make_url(url)) == {"Tommy": None, "Tina": None}
    code, out, _ = _run(capsys, url, "users", "get", "Tina")
    assert out.splitlines()[1] == "number   -"


@pytest.mark.parametrize("name", AWKWARD_NAMES, ids=lambda name: ascii(name)[:40])
def test_awkward_names_are_stored_shown_listed_and_deleted_verbatim(
    name: str, url: str, capsys: pytest.CaptureFixture[str]
):
    # "--" ends the options, so a name may start with a dash.
    assert _run(capsys, url, "users", "add", "--", name, "-7")[0] == 0
    assert stored_users(sqlalchemy.make_url(url)) == {name: -7}

    code, out, _ = _run(capsys, url, "users", "get", "--json", "--", name)
    assert (code, json.loads(out)["name"]) == (0, name)
    code, out, _ = _run(capsys, url, "users", "get", "--", name)
    assert out.splitlines()[0] == f"name     {name}"

    code, out, _ = _run(capsys, url, "users", "list", "--json")
    assert [user["name"] for user in json.loads(out)] == [name]
    code, out, _ = _run(capsys, url, "users", "list")
    assert out.splitlines()[1] == f"{'-7':>11}  {name}"

    assert _run(capsys, url, "users", "set", "--", name, "8")[0] == 0
    assert stored_users(sqlalchemy.make_url(url)) == {name: 8}
    assert _run(capsys, url, "users", "delete", "--quiet", "--", name) == (0, "", "")
    assert stored_users(sqlalchemy.make_url(url)) == {}


def test_adding_a_taken_name_exits_6_and_changes_nothing(
    url: str, capsys: pytest.CaptureFixture[str]
):
    _store(url, ("Jenny", 8675309))

    code, out, err = _run(capsys, url, "users", "add", "Jenny", "1")

    assert (code, out) == (6, "")
    assert "'Jenny' already exists" in one_error_line(err)
    assert stored_users(sqlalchemy.make_url(url)) == {"Jenny": 8675309}


@pytest.mark.parametrize("command", ["get", "delete"])
def test_getting_or_deleting_a_missing_user_exits_5_naming_it(
    command: str, url: str, capsys: pytest.CaptureFixture[str]
):
    _store(url, ("jenny", 1))  # names compare exactly

    code, out, err = _run(capsys, url, "users", command, "Jenny")

    assert (code, out) == (5, "")
    assert one_error_line(err) == "userstore: no user named 'Jenny'"
    assert stored_users(sqlalchemy.make_url(url)) == {"jenny": 1}


def test_delete_removes_only_that_user_and_confirms_it(
    url: str, capsys: pytest.CaptureFixture[str]
):
    _store(url, ("Jenny", 1), ("Tommy", 2))

    assert _run(capsys, url, "users", "delete", "Jenny") == (0, "deleted 'Jenny'\n", "")
    code, out, _ = _run(capsys, url, "users", "delete", "Tommy", "--json")
    assert (code, json.loads(out)) == (0, {"name": "Tommy", "deleted": True})
    assert stored_users(sqlalchemy.make_url(url)) == {}


def test_set_adds_updates_clears_and_reports_an_unchanged_number(
    url: str, capsys: pytest.CaptureFixture[str]
):
    assert _run(capsys, url, "users", "set", "Jenny", "1") == (
        0,
        "added 'Jenny' (number 1)\n",
        "",
    )
    assert _run(capsys, url, "users", "set", "Jenny", "2")[1] == "set 'Jenny' to number 2\n"
    assert _run(capsys, url, "users", "set", "Jenny", "2")[1] == "'Jenny' already has number 2\n"
    assert stored_users(sqlalchemy.make_url(url)) == {"Jenny": 2}

    code, out, _ = _run(capsys, url, "users", "set", "Jenny", "--no-number", "--json")
    document = json.loads(out)
    assert (code, document["number"], document["outcome"]) == (0, None, "updated")
    assert _utc(document["updated_at"]) > _utc(document["created_at"])
    code, out, _ = _run(capsys, url, "users", "set", "Jenny", "--no-number", "--json")
    assert json.loads(out)["outcome"] == "unchanged"
    code, out, _ = _run(capsys, url, "users", "set", "Tommy", "-3", "--json")
    assert (json.loads(out)["outcome"], json.loads(out)["number"]) == ("inserted", -3)
    assert stored_users(sqlalchemy.make_url(url)) == {"Jenny": None, "Tommy": -3}


def test_the_32_bit_limits_are_stored_and_leading_zeros_are_read_as_decimal(
    url: str, capsys: pytest.CaptureFixture[str]
):
    for name, number in [("low", "-2147483648"), ("high", "2147483647"), ("bond", "007")]:
        assert _run(capsys, url, "users", "add", name, number)[0] == 0

    assert stored_users(sqlalchemy.make_url(url)) == {
        "low": -(2**31),
        "high": 2**31 - 1,
        "bond": 7,
    }


def test_list_shows_users_in_code_point_order_and_pages_with_after_and_limit(
    url: str, capsys: pytest.CaptureFixture[str]
):
    _store(url, ("b", 2), ("B", None), ("a", 1), ("é", -2147483648), ("A", 10))

    assert _run(capsys, url, "users", "list") == (
        0,
        "     NUMBER  NAME\n"
        "         10  A\n"
        "          -  B\n"
        "          1  a\n"
        "          2  b\n"
        "-2147483648  é\n",
        "",
    )
    code, out, _ = _run(capsys, url, "users", "list", "--after", "B", "--limit", "2", "--json")
    assert [(u["name"], u["number"]) for u in json.loads(out)] == [("a", 1), ("b", 2)]
    assert code == 0
    code, out, _ = _run(capsys, url, "users", "list", "--after", "b", "--json")
    assert [u["name"] for u in json.loads(out)] == ["é"]
    assert code == 0
    assert _run(capsys, url, "users", "list", "--limit", "0") == (0, "     NUMBER  NAME\n", "")
    assert _run(capsys, url, "users", "list", "--after", "é", "--json") == (0, "[]\n", "")


def test_list_streams_a_page_at_a_time_and_its_json_is_one_array_of_every_user(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    _store(url, *((f"user{i:05d}", i) for i in range(2_345)))
    asked: list[int | None] = []
    list_page = UserRepository.list

    def recording_list(
        self: UserRepository, *, after: str | None = None, limit: int | None = None
    ) -> list[object]:
        asked.append(limit)
        return list_page(self, after=after, limit=limit)  # type: ignore[return-value]

    monkeypatch.setattr(UserRepository, "list", recording_list)

    code, out, _ = _run(capsys, url, "users", "list", "--json")
    listed = json.loads(out)
    assert code == 0
    assert [u["name"] for u in listed] == [f"user{i:05d}" for i in range(2_345)]
    assert asked == [users_cli.PAGE_SIZE] * 3  # never the whole table in one query

    asked.clear()
    code, out, _ = _run(capsys, url, "users", "list", "--limit", "1500")
    assert len(out.splitlines()) == 1 + 1_500
    assert asked == [1_000, 500]


def test_count_and_get_answer_even_when_quiet_but_confirmations_do_not_print(
    url: str, capsys: pytest.CaptureFixture[str]
):
    assert _run(capsys, url, "--quiet", "users", "add", "Jenny", "1") == (0, "", "")
    assert _run(capsys, url, "users", "set", "Tommy", "2", "--quiet", "--json") == (0, "", "")
    assert _run(capsys, url, "users", "count", "--quiet") == (0, "2\n", "")
    assert _run(capsys, url, "users", "count", "--quiet", "--json") == (0, '{"count": 2}\n', "")
    assert _run(capsys, url, "users", "get", "Jenny", "--quiet")[1].startswith("name     Jenny\n")
    assert _run(capsys, url, "users", "list", "--quiet")[1].count("\n") == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "{url}", "--json", "users", "count"],
        ["users", "--url", "{url}", "--json", "count"],
        ["users", "count", "--url", "{url}", "--json"],
        ["--quiet", "users", "--json", "count", "--url", "{url}"],
    ],
    ids=" ".join,
)
def test_url_quiet_and_json_go_before_or_after_the_group_or_the_command(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    elsewhere = url_in_the_environment(tmp_path, monkeypatch)
    url = f"sqlite:///{tmp_path / 'here.db'}"
    migrations.upgrade(url)
    _store(url, ("Jenny", 1))
    capsys.readouterr()

    assert main([part.format(url=url) for part in argv]) == 0

    assert capsys.readouterr() == ('{"count": 1}\n', "")
    assert not elsewhere.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "", "1"], "name must not be empty"),
        (["add", "x" * 256], "name must be at most 255 characters, got 256"),
        (["add", "tab\there"], "name must not contain control characters"),
        (["add", "x", "1.5"], "number must be an integer like 42 or -7, got '1.5'"),
        (["add", "x", "1e3"], "got '1e3'"),
        (["add", "x", "+5"], "got '+5'"),
        (["add", "x", " 5"], "got ' 5'"),
        (["add", "x", "1_000"], "got '1_000'"),
        (["add", "x", "٣"], "got '٣'"),
        (["add", "x", "0x10"], "got '0x10'"),
        (["add", "x", "2147483648"], "between -2147483648 and 2147483647, got 2147483648"),
        (["add", "x", "-2147483649"], "got -2147483649"),
        (["add", "x", "9" * 5000], "number is out of range, got 5000 digits"),
        (["set", "x", "none"], "got 'none'"),
        (["set", "x", "-"], "got '-'"),
        (["get", "\x00"], "control characters"),
        (["delete", "x" * 300], "at most 255 characters"),
        (["list", "--limit", "-1"], "limit must not be negative, got -1"),
        (["list", "--limit=-1"], "limit must not be negative, got -1"),
        (["list", "--limit", "ten"], "--limit must be a whole number like 0 or 100, got 'ten'"),
        (["list", "--limit", "-"], "--limit must be a whole number like 0 or 100, got '-'"),
        (["list", "--after", ""], "--after must not be empty"),
    ],
    ids=lambda value: ascii(" ".join(value))[:60] if isinstance(value, list) else "",
)
def test_invalid_arguments_exit_7_with_one_line_before_any_connection(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
):
    # The URL points at nothing: reaching for the database would exit 3.
    code, out, err = _run(capsys, UNREACHABLE, "users", *argv)

    assert (code, out) == (7, "")
    assert message in one_error_line(err)


def test_an_unmigrated_database_exits_4_asking_for_an_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'new.db'}"

    code, out, err = _run(capsys, url, "users", "count")

    assert (code, out) == (4, "")
    assert "userstore upgrade" in one_error_line(err)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (TransientDatabaseError("connection lost", code=None, backend="x"), 9),
        (DatabaseError("disk full", code=None, backend="x"), 1),
    ],
    ids=["transient", "other"],
)
def test_a_database_error_in_the_middle_of_a_list_exits_with_one_line(
    error: DatabaseError,
    code: int,
    url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    _store(url, *((f"user{i:05d}", i) for i in range(1_500)))
    list_page = UserRepository.list
    pages = iter([list_page, None])

    def failing_second_page(self: UserRepository, **kwargs: object) -> object:
        first = next(pages)
        if first is None:
            raise error
        return first(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(UserRepository, "list", failing_second_page)

    exit_code, out, err = _run(capsys, url, "users", "list")

    assert exit_code == code
    assert (
        out.count("\n") == 1 + 1_000
    )  # the first page was printed; the status says the rest is missing
    assert str(error) in one_error_line(err)


def test_a_commit_that_ends_in_keyboardinterrupt_exits_130_without_claiming_nothing_was_written(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    # Not Ctrl-C (whose handler only records it once a commit has begun), but
    # should anything end a commit that way, its outcome is unknown and is said to be.
    def interrupted(self: UserRepository) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(UserRepository, "commit", interrupted)

    code, out, err = _run(capsys, url, "users", "add", "Jenny", "1")

    assert (code, out) == (130, "")
    assert one_error_line(err) == (
        "userstore: interrupted while committing; whether the change was written is unknown: "
        "look before running it again"
    )
    assert stored_users(sqlalchemy.make_url(url)) == {}


@pytest.fixture(scope="module")
def many_users(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database with far more users than a pipe's buffer holds as a listing."""
    url = f"sqlite:///{tmp_path_factory.mktemp('many') / 'many.db'}"
    migrations.upgrade(url)
    _store(url, *((f"user{i:06d}", i) for i in range(30_000)))
    return url


def _listing(url: str) -> subprocess.Popen[bytes]:
    """``userstore users list`` through the installed entry point, its output piped."""
    entry_point = Path(sys.executable).parent / "userstore"
    return subprocess.Popen(
        [entry_point, "--url", url, "users", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_reader_that_stops_early_ends_the_list_with_exit_8_and_one_line(many_users: str):
    with _listing(many_users) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        assert process.stdout.readline() == b"     NUMBER  NAME\n"
        process.stdout.close()  # as `| head -1` does
        err = process.stderr.read().decode()
        code = process.wait()

    assert code == 8
    assert one_error_line(err) == "userstore: standard output was closed before all was written"


def test_ctrl_c_in_the_middle_of_a_list_exits_130_with_one_line(many_users: str):
    with _listing(many_users) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == b"     NUMBER  NAME\n"  # the command is running
        process.send_signal(signal.SIGINT)  # it is blocked on the full pipe, or soon will be
        out, err = process.communicate()

    assert process.returncode == 130
    assert "interrupted" in one_error_line(err.decode())
    assert len(out.splitlines()) < 30_000


# --- Ctrl-C: the message says what was written --------------------------------------------------

NOTHING_WRITTEN = "userstore: interrupted; nothing of the command's unit of work was written"
COMMITTED = "userstore: interrupted after the change was committed"


class Write(NamedTuple):
    """A users command that writes, on a database that holds Tommy (number 3)."""

    argv: list[str]
    stage: str  # the repository method that stages the write
    confirmation: str
    after: dict[str, int | None]  # the users once it is committed


WRITES = [
    Write(["add", "Jenny", "1"], "add", "added 'Jenny' (number 1)\n", {"Jenny": 1, "Tommy": 3}),
    Write(
        ["set", "Jenny", "2"], "upsert_many", "added 'Jenny' (number 2)\n", {"Jenny": 2, "Tommy": 3}
    ),
    Write(["delete", "Tommy"], "delete", "deleted 'Tommy'\n", {}),
]


@pytest.fixture(params=WRITES, ids=[" ".join(write.argv) for write in WRITES])
def write(url: str, request: pytest.FixtureRequest) -> Write:
    """Each write in turn, Tommy being stored."""
    _store(url, ("Tommy", 3))
    write: Write = request.param
    return write


def _ctrl_c() -> None:
    """Press Ctrl-C: SIGINT to this process, handled at once by whatever handler is installed."""
    signal.raise_signal(signal.SIGINT)


def test_ctrl_c_before_the_commit_exits_130_saying_nothing_was_written_and_nothing_is(
    write: Write, url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    real_stage = getattr(UserRepository, write.stage)

    def staged_then_interrupted(self: UserRepository, *args: object) -> object:
        staged = real_stage(self, *args)
        _ctrl_c()  # the write is staged (and flushed, for set and delete), not committed
        return staged

    monkeypatch.setattr(UserRepository, write.stage, staged_then_interrupted)

    code, out, err = _run(capsys, url, "users", *write.argv)

    assert (code, out) == (130, "")
    assert one_error_line(err) == NOTHING_WRITTEN
    assert stored_users(sqlalchemy.make_url(url)) == {"Tommy": 3}


def test_ctrl_c_while_committing_lets_the_commit_finish_and_says_it_was_committed(
    write: Write, url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    send = UserRepository._send  # the commit sends the session's commit through it
    pressed: list[bool] = []

    def interrupted_in_flight(self: UserRepository, *args: object, **kwargs: object) -> object:
        if not pressed:
            pressed.append(True)
            _ctrl_c()  # COMMIT is about to be sent
        return send(self, *args, **kwargs)  # type: ignore[arg-type]

    real_commit = UserRepository.commit

    def commit(self: UserRepository) -> None:
        monkeypatch.setattr(UserRepository, "_send", interrupted_in_flight)
        real_commit(self)

    monkeypatch.setattr(UserRepository, "commit", commit)

    code, out, err = _run(capsys, url, "users", *write.argv)

    assert pressed
    assert (code, out) == (130, write.confirmation)  # the report is printed too: it is true
    assert one_error_line(err) == COMMITTED
    assert stored_users(sqlalchemy.make_url(url)) == write.after


def test_ctrl_c_while_the_confirmation_prints_still_says_the_change_was_committed(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    real_report = users_cli.report

    def interrupted_report(*args: object, **kwargs: object) -> None:
        _ctrl_c()
        real_report(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(users_cli, "report", interrupted_report)

    code, out, err = _run(capsys, url, "users", "add", "Jenny", "1", "--json")

    assert code == 130
    assert json.loads(out)["name"] == "Jenny"
    assert one_error_line(err) == COMMITTED
    assert stored_users(sqlalchemy.make_url(url)) == {"Jenny": 1}


def test_a_commit_that_fails_after_ctrl_c_says_both_and_exits_130(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    _store(url, ("Jenny", 1))
    real_commit = UserRepository.commit

    def commit(self: UserRepository) -> None:
        signal.raise_signal(signal.SIGINT)  # inside the commit: recorded, not raised
        real_commit(self)  # fails: the name is taken

    monkeypatch.setattr(UserRepository, "commit", commit)
    monkeypatch.setattr(UserRepository, "add", lambda self, user: self._session.add(user) or user)

    code, out, err = _run(capsys, url, "users", "add", "Jenny", "2")

    assert (code, out) == (130, "")
    line = one_error_line(err)
    assert line.startswith("userstore: interrupted while committing; ")
    assert "'Jenny' already exists" in line
    assert stored_users(sqlalchemy.make_url(url)) == {"Jenny": 1}


def _drop_a_ctrl_c() -> None:
    """Press Ctrl-C inside a weakref callback, where Python drops the KeyboardInterrupt.

    Python reports it as "Exception ignored in ..." and carries on, as it does
    when Ctrl-C lands in a garbage-collection callback (SQLAlchemy has many).
    """

    class Doomed:
        pass

    doomed = Doomed()
    weakref.finalize(doomed, _ctrl_c)
    del doomed


@pytest.mark.parametrize(
    ("argv", "method"),
    [
        (["users", "list", "--json"], "list"),
        (["users", "list"], "list"),
        (["users", "count"], "count"),
    ],
    ids=" ".join,
)
def test_a_ctrl_c_that_python_drops_in_a_gc_callback_still_exits_130_with_one_line(
    argv: list[str],
    method: str,
    url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    _store(url, *((f"user{i:05d}", i) for i in range(2_500)))
    real = getattr(UserRepository, method)
    calls: list[int] = []

    def with_a_dropped_ctrl_c(self: UserRepository, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            _drop_a_ctrl_c()
        return real(self, **kwargs)

    monkeypatch.setattr(UserRepository, method, with_a_dropped_ctrl_c)

    code, out, err = _run(capsys, url, *argv)

    assert code == 130
    assert one_error_line(err) == NOTHING_WRITTEN  # and no "Exception ignored" report
    assert len(calls) == 1  # a list stops at its next page
    assert len(out.splitlines()) <= 1 + users_cli.PAGE_SIZE


def test_ctrl_c_handling_is_put_back_after_the_command(
    url: str, capsys: pytest.CaptureFixture[str]
):
    before = signal.getsignal(signal.SIGINT)
    unraisable = sys.unraisablehook

    _run(capsys, url, "users", "count")

    assert signal.getsignal(signal.SIGINT) is before
    assert sys.unraisablehook is unraisable


# --- standard output and error closed or full ---------------------------------------------------


def _shell(url: str, command: str) -> subprocess.CompletedProcess[str]:
    """Run ``userstore`` (the installed script) through bash, for its redirections."""
    entry_point = Path(sys.executable).parent / "userstore"
    return subprocess.run(
        ["bash", "-c", f'{entry_point} --url "$URL" {command}'],
        env={**os.environ, "URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("redirect", "reason"),
    [(">&-", "standard output is closed"), ("> /dev/full", "No space left on device")],
    ids=["closed", "full"],
)
def test_a_write_whose_confirmation_cannot_be_printed_exits_8_saying_it_was_committed(
    redirect: str, reason: str, url: str
):
    result = _shell(url, f"users add Jenny 1 {redirect}")

    assert (result.returncode, result.stdout) == (8, "")
    line = one_error_line(result.stderr)
    assert line.startswith("userstore: added 'Jenny' (number 1), committed, but standard output ")
    assert reason in line
    assert stored_users(sqlalchemy.make_url(url)) == {"Jenny": 1}


@pytest.mark.parametrize("command", ["users list", "users list --json", "users get Jenny"])
@pytest.mark.parametrize("redirect", [">&-", "> /dev/full"], ids=["closed", "full"])
def test_an_answer_that_cannot_be_printed_exits_8_with_one_line(
    command: str, redirect: str, url: str
):
    _store(url, ("Jenny", 1))

    result = _shell(url, f"{command} {redirect}")

    assert result.returncode == 8
    assert "standard output " in one_error_line(result.stderr)
    assert "committed" not in result.stderr


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"], ids=["closed", "full"])
def test_with_standard_error_closed_or_full_the_message_is_dropped_and_the_status_kept(
    redirect: str, url: str
):
    result = _shell(url, f"users get Nobody --json {redirect}")

    assert (result.returncode, result.stdout) == (5, "")  # not the message, on stdout


def test_with_standard_error_gone_an_error_is_not_written_to_standard_output(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sys, "stderr", None)

    code = main(["--url", url, "users", "get", "Nobody", "--json"])

    assert (code, capsys.readouterr().out) == (5, "")


# --- numbers, usage, missing files, names that do not print -------------------------------------


def test_leading_zeros_however_many_do_not_count_towards_a_numbers_size(
    url: str, capsys: pytest.CaptureFixture[str]
):
    zeros = "0" * 5_000

    assert _run(capsys, url, "users", "add", "bond", f"{zeros}7")[0] == 0
    assert _run(capsys, url, "users", "set", "neg", f"-{zeros}7")[0] == 0
    assert _run(capsys, url, "users", "add", "zero", zeros)[0] == 0
    assert stored_users(sqlalchemy.make_url(url)) == {"bond": 7, "neg": -7, "zero": 0}
    code, out, _ = _run(capsys, url, "users", "list", "--limit", f"{zeros}2", "--json")
    assert (code, [user["name"] for user in json.loads(out)]) == (0, ["bond", "neg"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "x"], "give a NUMBER, or --no-number to store none (see: userstore users set"),
        (["add", "x", "1", "--no-number"], "give a NUMBER or --no-number, not both (see: "),
        (["set", "x", "1", "--no-number"], "give a NUMBER or --no-number, not both (see: "),
    ],
    ids=" ".join,
)
def test_a_number_missing_or_given_twice_is_a_usage_error_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
):
    code, out, err = _run(capsys, UNREACHABLE, "users", *argv)

    assert (code, out) == (2, "")
    assert message in one_error_line(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["users", "add", "Jenny"],
        ["users", "set", "Jenny", "1"],
        ["users", "get", "Jenny"],
        ["users", "delete", "Jenny"],
        ["users", "list"],
        ["users", "count"],
        ["current"],
        ["check"],
        ["downgrade", "base"],
    ],
    ids=" ".join,
)
def test_a_command_on_a_missing_sqlite_file_exits_4_and_does_not_create_it(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    missing = tmp_path / "typo.db"

    code, out, err = _run(capsys, f"sqlite:///{missing}", *argv)

    assert (code, out) == (4, "")
    assert (
        one_error_line(err) == f"userstore: no database at {missing}; userstore upgrade creates it"
    )
    assert not missing.exists()


def test_upgrade_creates_a_missing_sqlite_file_relative_to_the_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)

    assert _run(capsys, "sqlite:///here.db", "users", "count")[0] == 4
    assert _run(capsys, "sqlite:///here.db", "upgrade", "--quiet")[0] == 0
    assert _run(capsys, "sqlite:///here.db", "users", "count") == (0, "0\n", "")
    assert (tmp_path / "here.db").is_file()


UNPRINTABLE_NAMES = [
    "line\u2028separator",
    "para\u2029separator",
    "\u202eevil.exe",
    "no\xa0break",
    "zero\u200bwidth",
    "soft\xadhyphen",
]


@pytest.mark.parametrize("name", UNPRINTABLE_NAMES, ids=ascii)
def test_a_name_that_does_not_print_is_escaped_for_people_and_kept_in_json(
    name: str, url: str, capsys: pytest.CaptureFixture[str]
):
    assert not name.isprintable()
    _store(url, ("Jenny", 1), (name, 2), ("zed", 3))

    assert _run(capsys, url, "users", "add", name, "2")[2].endswith(
        f"a user named {name!r} already exists; the unit of work was rolled back\n"
    )
    code, out, _ = _run(capsys, url, "users", "list")
    lines = out.split("\n")
    assert (code, lines[-1]) == (0, "")
    assert sorted(lines[1:-1]) == sorted(
        [f"{'1':>11}  Jenny", f"{'2':>11}  {name!r}", f"{'3':>11}  zed"]
    )
    assert all(line.isprintable() for line in lines)
    code, out, _ = _run(capsys, url, "users", "get", name)
    assert out.split("\n")[0] == f"name     {name!r}"
    assert len(out.split("\n")) == 5

    code, out, _ = _run(capsys, url, "users", "list", "--json")
    assert len(out.splitlines()) == 5  # "[", three users, "]": U+2028 and U+2029 are escaped
    assert [user["name"] for user in json.loads(out)] == sorted(["Jenny", name, "zed"])
    code, out, _ = _run(capsys, url, "users", "get", name, "--json")
    assert json.loads(out)["name"] == name
