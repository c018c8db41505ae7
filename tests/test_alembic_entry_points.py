"""The other ways in: the alembic command at the repo root, offline SQL, and an installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import userstore
from userstore import migrations

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _alembic(*args: str, url: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "USERSTORE_DATABASE_URL": url}
    return subprocess.run(
        [str(BIN / "alembic"), *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )


def test_alembic_upgrade_head_from_the_repo_root_migrates_the_configured_database(
    tmp_path: Path,
):
    url = f"sqlite:///{tmp_path / 'app.db'}"

    _alembic("upgrade", "head", url=url)

    assert migrations.current(url) == migrations.head()
    assert _alembic("current", url=url).stdout.split()[0] == migrations.head()
    _alembic("check", url=url)


def test_offline_sql_for_postgresql_is_one_transaction_with_our_version_table():
    sql = _alembic("upgrade", "head", "--sql", url="postgresql://u@h/db").stdout

    assert sql.count("BEGIN;") == 1
    assert sql.rstrip().endswith("COMMIT;")
    assert 'name VARCHAR(255) COLLATE "C" NOT NULL' in sql
    assert "CONSTRAINT pk_users PRIMARY KEY (name)" in sql
    assert "created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL" in sql
    assert "CREATE TABLE userstore_alembic_version" in sql
    assert "INSERT INTO userstore_alembic_version (version_num) VALUES ('0001_users')" in sql
    assert " alembic_version" not in sql


def test_offline_sql_for_mariadb_is_rerunnable_step_by_step():
    sql = _alembic("upgrade", "head", "--sql", url="mariadb://u@h/db").stdout

    assert "CREATE TABLE IF NOT EXISTS users" in sql
    assert "CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin" in sql
    assert (
        "ADD COLUMN IF NOT EXISTS created_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6))" in sql
    )
    assert "ADD COLUMN IF NOT EXISTS updated_at" in sql
    assert "UPDATE userstore_alembic_version SET version_num='0002_timestamps'" in sql
    assert " alembic_version" not in sql


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``command``; on failure, fail the test showing what it printed."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


@dataclass(frozen=True)
class InstalledWheel:
    """userstore installed from its wheel into ``target``, outside the repository.

    Its dependencies (SQLAlchemy, alembic) come from the running environment: run
    :attr:`python` with :attr:`env`, whose ``PYTHONPATH`` puts ``target`` ahead of them (and
    of the editable checkout, whose finder Python only consults when the path has no
    ``userstore``).
    """

    target: Path
    python: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    """userstore built into a wheel and installed, both offline.

    The build uses the running environment's setuptools (the test extra brings one that meets
    the build-system requirement) instead of fetching one, and goes through an sdist, as
    ``python -m build`` does by default, so the wheel also shows what the sdist carries. The
    install takes the wheel alone: no index, no dependencies.
    """
    base = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(base / "dist"), str(ROOT)]
    )
    (wheel,) = (base / "dist").glob("userstore-*.whl")
    target = base / "site"
    pip_install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    _run([*pip_install, "--target", str(target), str(wheel)])
    env = {**os.environ, "PYTHONPATH": str(target)}
    return InstalledWheel(target=target, python=sys.executable, env=env)


def test_the_installed_wheel_migrates_a_fresh_sqlite_file(
    installed_wheel: InstalledWheel, tmp_path: Path
):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    script = (
        "import pathlib, sys, userstore, userstore.migrations as m;"
        "here = pathlib.Path(userstore.__file__).resolve();"
        "assert here.is_relative_to(pathlib.Path(sys.argv[2]).resolve()), here;"
        "m.upgrade(sys.argv[1]); m.assert_current(sys.argv[1]); m.check(sys.argv[1]);"
        "print(m.script_location()); print(m.current(sys.argv[1]))"
    )
    result = _run(
        [installed_wheel.python, "-c", script, url, str(installed_wheel.target)],
        cwd=tmp_path,
        env=installed_wheel.env,
    )

    scripts, revision = result.stdout.split()[-2:]
    assert Path(scripts).is_relative_to(installed_wheel.target.resolve())
    assert revision == migrations.head()


def test_the_wheel_carries_every_module_of_the_source_tree(installed_wheel: InstalledWheel):
    source = ROOT / "userstore"
    expected = {path.relative_to(source).as_posix() for path in source.rglob("*.py")}
    expected |= {"py.typed"}
    installed = installed_wheel.target / "userstore"
    shipped = {path.relative_to(installed).as_posix() for path in installed.rglob("*")}

    assert expected - shipped == set()  # userstore.asyncio and userstore.testing included


def test_the_wheel_carries_the_license(installed_wheel: InstalledWheel):
    (dist_info,) = installed_wheel.target.glob("userstore-*.dist-info")
    licenses = [path.name for path in dist_info.rglob("LICENSE")]

    assert licenses == ["LICENSE"]
    assert "License-Expression: MIT" in (dist_info / "METADATA").read_text(encoding="utf-8")


def test_an_apps_own_alembic_ini_can_point_at_the_packaged_scripts(
    installed_wheel: InstalledWheel, tmp_path: Path
):
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = userstore:_alembic\n", encoding="utf-8"
    )
    url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {**installed_wheel.env, "USERSTORE_DATABASE_URL": url}

    _run([installed_wheel.python, "-m", "alembic", "upgrade", "head"], cwd=tmp_path, env=env)

    engine = userstore.create_engine(url)
    try:
        with engine.connect() as connection:
            version = connection.execute(
                text("SELECT version_num FROM userstore_alembic_version")
            ).scalar()
    finally:
        engine.dispose()
    assert version == migrations.head()
