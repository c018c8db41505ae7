"""The fake as a target of the contract suite: a test that needs a database never passes on it.

Each test runs a small test file in a subprocess with this suite's conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A test directory that uses this suite's conftest, on SQLite and the fake only."""
    monkeypatch.setenv("USERSTORE_TEST_BACKENDS", "sqlite")
    monkeypatch.delenv("USERSTORE_REQUIRE_BACKENDS", raising=False)  # CI requires the servers
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the subprocess imports tests.conftest
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    return pytester


def test_a_contract_test_that_asks_for_a_real_database_on_the_fake_stops_the_run(
    suite: pytest.Pytester,
):
    suite.makepyfile(test_contract="def test_reads_sql(repo, plain_engine):\n    pass\n")

    result = suite.runpytest_subprocess()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_reads_sql?sync-memory? *needs a real database (fixtures database_url, plain_en*"]
    )


def test_a_test_marked_not_on_the_fake_is_skipped_there_with_its_reason_and_runs_elsewhere(
    suite: pytest.Pytester,
):
    suite.makepyfile(
        test_contract=(
            "import pytest\n\n"
            '@pytest.mark.not_on_fake(reason="it reads SQL")\n'
            "def test_reads_sql(repo, plain_engine):\n"
            "    repo.add_many([('a', 1)])\n"
            "    repo.commit()\n"
        )
    )

    result = suite.runpytest_subprocess("-rs")

    result.assert_outcomes(passed=2, skipped=2)  # sync and async, on SQLite / on the fake
    result.stdout.fnmatch_lines(["*not applicable to the in-memory fake: it reads SQL*"])


def test_a_contract_test_runs_on_the_fake_in_both_flavours(suite: pytest.Pytester):
    suite.makepyfile(
        test_contract=(
            "def test_commit_stores(repo, stored):\n"
            "    repo.add_many([('a', 1)])\n"
            "    repo.commit()\n"
            "    assert stored() == [('a', 1)]\n"
        )
    )

    result = suite.runpytest_subprocess("-v")

    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_commit_stores?sync-memory? PASSED*"])
    result.stdout.fnmatch_lines(["*test_commit_stores?async-memory? PASSED*"])
