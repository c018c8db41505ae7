"""The other ways in: the alembic command at the repo root, offline SQL, and an installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

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


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repository with userstore installed from its wheel."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(base / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (base / "dist").glob("userstore-*.whl")
    venv.create(base / "venv", with_pip=True)
    python = base / "venv" / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    return python


def test_the_installed_wheel_migrates_a_fresh_sqlite_file(installed_wheel: Path, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    script = (
        "import sys, userstore, userstore.migrations as m;"
        "assert 'site-packages' in userstore.__file__, userstore.__file__;"
        "m.upgrade(sys.argv[1]); m.assert_current(sys.argv[1]); m.check(sys.argv[1]);"
        "print(m.current(sys.argv[1]))"
    )
    result = subprocess.run(
        [str(installed_wheel), "-c", script, url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.split()[-1] == migrations.head()


def test_an_apps_own_alembic_ini_can_point_at_the_packaged_scripts(
    installed_wheel: Path, tmp_path: Path
):
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = userstore:_alembic\n", encoding="utf-8"
    )
    url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {**os.environ, "USERSTORE_DATABASE_URL": url}

    subprocess.run(
        [str(installed_wheel.parent / "alembic"), "upgrade", "head"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=True,
    )

    engine = userstore.create_engine(url)
    try:
        with engine.connect() as connection:
            version = connection.execute(
                text("SELECT version_num FROM userstore_alembic_version")
            ).scalar()
    finally:
        engine.dispose()
    assert version == migrations.head()
