"""pyproject.toml's declared lower bounds are the versions .ci/run tests them at.

``.ci/lowest-versions.txt`` pins each dependency of the lowest-versions run (the runtime
dependencies, the extras it installs, and the build backend) to exactly its declared lower
bound; .ci/run installs those pins and runs the SQLite suite on them. These tests keep the two
files in step, so a bound that no run has passed on cannot be declared.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / ".ci" / "lowest-versions.txt"
# The extras .ci/run installs on the lowest versions: test_error_table.py imports both drivers.
LOWEST_EXTRAS = ("postgresql", "mariadb", "asyncio", "test")
# Pinned exactly (==) instead: CI lints and type-checks with one version on purpose.
EXACT_EXTRAS = ("lint",)


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _declared() -> list[tuple[str, Requirement]]:
    """(where, requirement) for every dependency the lowest-versions run installs."""
    pyproject = _pyproject()
    extras = pyproject["project"]["optional-dependencies"]
    declared = [("build-system", Requirement(r)) for r in pyproject["build-system"]["requires"]]
    declared += [("dependencies", Requirement(r)) for r in pyproject["project"]["dependencies"]]
    for extra in LOWEST_EXTRAS:
        declared += [(f"extra {extra!r}", Requirement(r)) for r in extras[extra]]
    return declared


def _lower_bound(requirement: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(bounds) if bounds else None


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, raw in enumerate(CONSTRAINTS.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pin = Requirement(line)
        specifiers = list(pin.specifier)
        where = f"{CONSTRAINTS.name}:{number}: {line!r}"
        assert not pin.extras, f"{where}: pip refuses extras in a constraint"
        assert pin.marker is None, f"{where}: a pin holds everywhere, without a marker"
        assert [s.operator for s in specifiers] == ["=="], f"{where}: pin one version, with =="
        name = canonicalize_name(pin.name)
        assert name not in pins, f"{where}: {pin.name} is pinned twice"
        pins[name] = Version(specifiers[0].version)
    return pins


def test_every_declared_lower_bound_is_pinned_exactly_in_the_lowest_versions_file():
    pins = _pins()
    problems = []
    bounds: dict[str, Version] = {}
    for where, requirement in _declared():
        name = canonicalize_name(requirement.name)
        bound = _lower_bound(requirement)
        if bound is None:
            problems.append(f"{where}: {requirement} declares no lower bound")
        elif bounds.setdefault(name, bound) != bound:
            problems.append(f"{where}: {requirement} disagrees with another bound, {bounds[name]}")
        elif name not in pins:
            problems.append(f"{where}: {requirement} has no pin in {CONSTRAINTS.name}")
        elif pins[name] != bound:
            problems.append(f"{where}: {requirement} but {CONSTRAINTS.name} pins {pins[name]}")

    assert problems == []


def test_the_lowest_versions_file_pins_nothing_that_is_not_declared():
    declared = {canonicalize_name(requirement.name) for _, requirement in _declared()}

    assert sorted(set(_pins()) - declared) == []


@pytest.mark.parametrize("extra", EXACT_EXTRAS)
def test_the_linters_are_pinned_to_one_version(extra: str):
    requirements = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"][extra]]

    assert requirements
    for requirement in requirements:
        assert [s.operator for s in requirement.specifier] == ["=="], str(requirement)


def test_ci_runs_the_suite_on_the_pinned_lowest_versions():
    commands = [
        shlex.split(line, comments=True) for line in (ROOT / ".ci" / "run").read_text().splitlines()
    ]
    lowest_installs = [
        words
        for words in commands
        if "install" in words and "-c" in words and ".ci/lowest-versions.txt" in words
    ]

    assert any(f".[{','.join(LOWEST_EXTRAS)}]" in words for words in lowest_installs)


def test_the_license_files_exist():
    project = _pyproject()["project"]

    assert project["license"] == "MIT"
    for pattern in project["license-files"]:
        assert list(ROOT.glob(pattern)), pattern


_WITHOUT_GREENLET = """
import asyncio, sys
sys.modules["greenlet"] = None  # a sync-only install: no asyncio extra
import userstore
from userstore import migrations
engine = userstore.create_engine("sqlite://")
migrations.upgrade(engine)
for call in (
    lambda: userstore.create_async_engine("sqlite://"),
    lambda: asyncio.run(migrations.upgrade_async("sqlite://")),
):
    try:
        call()
    except userstore.ConfigurationError as error:
        assert "userstore[asyncio]" in str(error), error
    else:
        raise AssertionError("no ConfigurationError")
print("ok")
"""


def test_a_sync_only_install_imports_and_works_and_names_the_async_extra_when_asked():
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_GREENLET],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
