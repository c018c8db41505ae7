"""examples/userapp, the example app: its own test suite passes on every backend, and its
README's commands do what it says.

The example's suite runs as its README says (``python -m pytest`` in its directory, with its
own pytest configuration and conftest), in a subprocess, with ``--userstore-url`` naming the
backend's server. The run must pass and must have run exactly :data:`EXPECTED_TESTS` tests, so a
test file that stopped being collected, or a test that skips, cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final
from xml.etree import ElementTree

import httpx
import pytest
import pytest_alembic
from alembic.config import Config
from packaging.requirements import Requirement
from pytest_alembic import tests as builtin
from sqlalchemy import Engine, create_engine, inspect, text

import userstore
from tests.databases import migrated_database, throwaway_database
from userstore import migrations

APP_DIRECTORY: Final = Path(__file__).resolve().parent.parent / "examples" / "userapp"
README: Final = (APP_DIRECTORY / "README.md").read_text(encoding="utf-8")

EXPECTED_TESTS: Final = 73
"""How many tests examples/userapp/tests holds (parametrized cases counted one by one)."""

RUN_ONLY_REQUIREMENTS: Final = {"uvicorn"}
"""requirements.txt entries that only serving the app needs (not installed for the tests)."""

_VARIABLES_TO_DROP: Final = (
    "USERSTORE_DATABASE_URL",
    "USERSTORE_TEST_DATABASE_URL",
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
)


def _readme_commands(section: str) -> list[str]:
    """The lines of the ``sh`` blocks under a ``##`` heading of the example's README."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", README, re.DOTALL | re.M)
    assert match, f"examples/userapp/README.md has no section {section!r}"
    blocks = re.findall(r"^```sh\n(.*?)^```", match.group(1), re.DOTALL | re.M)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def _environment(**variables: str) -> dict[str, str]:
    """This process's environment for a subprocess: this venv's scripts first, no stray
    database or pytest settings of the caller's."""
    environment = {k: v for k, v in os.environ.items() if k not in _VARIABLES_TO_DROP}
    scripts = str(Path(sys.executable).parent)
    environment["PATH"] = os.pathsep.join([scripts, environment.get("PATH", "")])
    return environment | variables


def _migrate_as_the_readme_says(url: str) -> None:
    for command in _readme_commands("Migrate"):
        subprocess.run(
            shlex.split(command),
            cwd=APP_DIRECTORY,
            env=_environment(USERSTORE_DATABASE_URL=url),
            check=True,
            capture_output=True,
            timeout=120,
        )


def _run_the_example_suite(tmp_path: Path, *options: str) -> tuple[int, dict[str, int], str]:
    """Run the README's test command in the example's directory; its status, counts and output."""
    command, *_ = _readme_commands("Test")
    assert command == "python -m pytest"
    report = tmp_path / "report.xml"
    completed = subprocess.run(
        [
            sys.executable,
            *shlex.split(command)[1:],
            *options,
            f"--junitxml={report}",
            f"--basetemp={tmp_path / 'basetemp'}",
            "-p",
            "no:cacheprovider",  # leave nothing behind in the example's directory
        ],
        cwd=APP_DIRECTORY,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = completed.stdout + completed.stderr
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if report.exists():
        for suite in ElementTree.parse(report).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, "0"))
    return completed.returncode, counts, output


def test_the_example_apps_own_tests_pass_on_every_backend(backend: str, tmp_path: Path):
    if backend == "sqlite":
        returncode, counts, output = _run_the_example_suite(tmp_path)  # the plugin's own file
    else:
        documented = [line.split()[-1] for line in _readme_commands("Test")[1:]]
        assert any(url.startswith(f"{backend}://") for url in documented), documented
        # The server must be up (or the test skips, unless USERSTORE_REQUIRE_BACKENDS names it).
        # The plugin then makes its own throwaway database there, using this one to connect.
        with throwaway_database(backend, tmp_path) as server:
            url = server.render_as_string(hide_password=False)
            returncode, counts, output = _run_the_example_suite(tmp_path, f"--userstore-url={url}")

    assert returncode == 0, output
    assert counts == {"tests": EXPECTED_TESTS, "failures": 0, "errors": 0, "skipped": 0}, output


def test_the_readme_migrate_commands_create_both_schemas_on_a_new_sqlite_file(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'userapp.db'}"
    assert _readme_commands("Migrate") == ["userstore upgrade", "alembic upgrade head"]

    _migrate_as_the_readme_says(url)

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            (app_revision,) = connection.execute(text("SELECT version_num FROM alembic_version"))
            foreign_keys = inspect(connection).get_foreign_keys("notes")
    finally:
        engine.dispose()
    assert tables == {"users", "userstore_alembic_version", "notes", "alembic_version"}
    assert app_revision == ("0001_notes",)
    assert [(key["referred_table"], key["referred_columns"]) for key in foreign_keys] == [
        ("users", ["name"])
    ]
    assert foreign_keys[0]["options"]["ondelete"] == "CASCADE"


@pytest.fixture
def importable_example(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example's package importable as uvicorn imports it, and forgotten afterwards."""
    monkeypatch.syspath_prepend(str(APP_DIRECTORY))
    yield
    for name in [name for name in sys.modules if name == "userapp" or name.startswith("userapp.")]:
        del sys.modules[name]


def test_the_readme_run_command_serves_the_app_on_a_migrated_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, importable_example: None
):
    command = _readme_commands("Run")[0]
    assert shlex.split(command)[:2] == ["uvicorn", "--factory"]
    module_name, _, factory_name = shlex.split(command)[2].partition(":")
    url = f"sqlite:///{tmp_path / 'userapp.db'}"
    _migrate_as_the_readme_says(url)
    monkeypatch.setenv("USERSTORE_DATABASE_URL", url)

    # uvicorn imports the module and calls the factory; then serves it, lifespan first.
    app = getattr(import_module(module_name), factory_name)()

    async def serve() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://userapp.test") as client,
        ):
            return [
                await client.post("/users", json={"name": "Jenny", "number": 8675309}),
                await client.post("/users/Jenny/notes", json={"body": "called back"}),
                await client.get("/users/Jenny/notes"),
            ]

    responses = asyncio.run(serve())

    assert [response.status_code for response in responses] == [201, 201, 200]
    assert [note["body"] for note in responses[2].json()] == ["called back"]


def test_the_readme_install_command_names_the_asyncio_extra_and_requirements_the_tests_meet():
    (command,) = _readme_commands("Install")[1:]
    assert command == "pip install -e '../..[asyncio]' -r requirements.txt"
    requirements = [
        Requirement(line)
        for line in (APP_DIRECTORY / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    installed: dict[str, str | None] = {}
    for requirement in requirements:
        try:
            installed[requirement.name] = version(requirement.name)
        except PackageNotFoundError:
            installed[requirement.name] = None

    missing = {name for name, found in installed.items() if found is None}
    assert missing <= RUN_ONLY_REQUIREMENTS
    for requirement in requirements:
        found = installed[requirement.name]
        if found is not None:
            assert requirement.specifier.contains(found), (requirement, found)
    assert "userstore" not in installed  # the app's own dependencies only


# --- pytest-alembic's built-in tests on the example's own history, on every backend ----------


@pytest.fixture
def alembic_engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """A userstore engine on a new database migrated by userstore: where the app's runs."""
    with migrated_database(backend, tmp_path) as url:
        engine = userstore.create_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def alembic_runner(
    alembic_engine: Engine, importable_example: None
) -> Iterator[pytest_alembic.MigrationContext]:
    """pytest-alembic's runner on examples/userapp/alembic.ini (its plugin is not loaded)."""
    config = pytest_alembic.Config(alembic_config=Config(APP_DIRECTORY / "alembic.ini"))
    with pytest_alembic.runner(config=config, engine=alembic_engine) as runner:
        yield runner


def test_the_examples_history_has_a_single_head(alembic_runner: pytest_alembic.MigrationContext):
    builtin.test_single_head_revision(alembic_runner)


def test_the_examples_history_upgrades_after_userstores_and_matches_its_models(
    alembic_runner: pytest_alembic.MigrationContext, alembic_engine: Engine
):
    builtin.test_upgrade(alembic_runner)
    builtin.test_model_definitions_match_ddl(alembic_runner)

    assert migrations.current(alembic_engine) == migrations.head()
    assert set(inspect(alembic_engine).get_table_names()) == {
        "users",
        "userstore_alembic_version",
        "notes",
        "alembic_version",
    }


def test_the_examples_revisions_downgrade_and_upgrade_again_keeping_the_users(
    alembic_runner: pytest_alembic.MigrationContext, alembic_engine: Engine
):
    with alembic_engine.begin() as connection:
        connection.execute(text("INSERT INTO users (name, number) VALUES ('Jenny', 1)"))

    builtin.test_up_down_consistency(alembic_runner)

    with alembic_engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM users")).scalars().all() == ["Jenny"]
