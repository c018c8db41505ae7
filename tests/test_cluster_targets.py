"""The cluster targets of the contract suite: selected, skipped and required like the backends.

``pgbouncer`` runs the suite through PgBouncer in transaction mode, ``galera``
on a three-node Galera cluster with each session on the next node (see
tests/databases.py and tests/clusters.py). The subprocess tests run a small
test file with this suite's conftest, as tests/test_fake_target.py does.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.databases import (
    CONTRACT_TARGETS,
    Target,
    engine_options,
    prepare_engine,
    target_name,
    throwaway_database,
)
from tests.flavours import FLAVOURS, FlavouredEngine

ROOT = Path(__file__).parents[1]
_CONTRACT_TEST = "def test_commit_stores(backend, repo, stored):\n    pass\n"


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A test directory that uses this suite's conftest, with a contract test file."""
    monkeypatch.delenv("USERSTORE_REQUIRE_BACKENDS", raising=False)  # CI requires the clusters
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the subprocess imports tests.conftest
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    pytester.makepyfile(test_contract=_CONTRACT_TEST)
    return pytester


def test_a_cluster_target_equals_its_dialect_family_and_names_itself():
    pgbouncer, galera = CONTRACT_TARGETS["pgbouncer"], CONTRACT_TARGETS["galera"]

    assert (pgbouncer == "postgresql", galera == "mariadb") == (True, True)
    assert {"postgresql": 1}[pgbouncer] == 1  # what tests' tables by backend rely on
    assert (target_name(pgbouncer), target_name(galera), target_name("sqlite")) == (
        "pgbouncer",
        "galera",
        "sqlite",
    )
    copy = pickle.loads(pickle.dumps(pgbouncer))  # a worker process gets it whole
    assert (type(copy), copy, copy.target) == (Target, "postgresql", "pgbouncer")


def test_the_contract_suite_runs_on_the_cluster_targets_under_their_own_ids(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("USERSTORE_TEST_BACKENDS", "sqlite,pgbouncer,galera")

    result = suite.runpytest_subprocess("--collect-only", "-q")

    collected = {line for line in result.stdout.lines if line.startswith("test_contract.py")}
    assert collected == {
        f"test_contract.py::test_commit_stores[{flavour}-{target}]"
        for flavour in FLAVOURS
        for target in ("sqlite", "pgbouncer", "galera", "memory")
    }


def test_an_unreachable_cluster_target_skips_saying_how_to_start_it_and_fails_if_required(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("USERSTORE_TEST_BACKENDS", "pgbouncer")
    monkeypatch.setenv(
        "USERSTORE_TEST_PG_PRIMARY_URL", "postgresql+psycopg://postgres@127.0.0.1:9/postgres"
    )

    skipped = suite.runpytest_subprocess("-rs")
    monkeypatch.setenv("USERSTORE_REQUIRE_BACKENDS", "pgbouncer")
    required = suite.runpytest_subprocess()

    skipped.assert_outcomes(passed=2, skipped=2)  # the fake passes, in both flavours
    skipped.stdout.fnmatch_lines(["*pgbouncer target's server at *:9/postgres is not reachable*"])
    skipped.stdout.fnmatch_lines(["*(bash .ci/clusters up starts it)"])
    required.assert_outcomes(passed=2, errors=2)
    required.stdout.fnmatch_lines(["*USERSTORE_REQUIRE_BACKENDS requires it*"])


def test_a_cluster_target_not_under_test_is_left_out_even_when_all_are_required(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("USERSTORE_TEST_BACKENDS", "sqlite")
    monkeypatch.setenv("USERSTORE_REQUIRE_BACKENDS", "all")  # the lowest-versions run
    suite.makepyfile(
        test_replica=(
            "from tests.databases import require_target\n\n"
            "def test_needs_a_replica():\n"
            "    require_target('pg-replica')\n"
        )
    )

    result = suite.runpytest_subprocess("-rs")

    result.assert_outcomes(passed=4, skipped=1)  # sqlite and the fake, sync and async
    result.stdout.fnmatch_lines(["*pg-replica is not under test*"])


def test_an_unknown_target_name_stops_the_run_before_any_test(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("USERSTORE_TEST_BACKENDS", "sqlite,pgbouncr")

    result = suite.runpytest_subprocess()

    assert result.ret != pytest.ExitCode.OK
    result.stderr.fnmatch_lines(
        ["*unknown backends ??pgbouncr??*pgbouncer, galera, pg-replica, mariadb-replica*"]
    )


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_new_session_on_the_galera_target_runs_on_the_next_node_and_reads_causally(
    flavour: str, tmp_path: Path
):
    galera = CONTRACT_TARGETS["galera"]
    with throwaway_database(galera, tmp_path) as url:
        engine = FlavouredEngine(flavour, url, **engine_options(galera))
        prepare_engine(galera, engine.sync_engine)
        seen = []
        try:
            for _ in range(6):
                with engine.session() as session:
                    row = session.execute(text("SELECT @@port, @@wsrep_sync_wait")).one()
                    seen.append(tuple(row))
        finally:
            engine.dispose()

    assert [port for port, _ in seen] == [3311, 3312, 3313] * 2
    assert all(wait & 1 for _, wait in seen)  # causal_reads=True: reads wait for the cluster


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_pgbouncer_target_reaches_the_primary_through_pgbouncer(flavour: str, tmp_path: Path):
    pgbouncer = CONTRACT_TARGETS["pgbouncer"]
    with throwaway_database(pgbouncer, tmp_path) as url:
        engine = FlavouredEngine(flavour, url, **engine_options(pgbouncer))
        try:
            with engine.session() as session:
                server_port = session.execute(text("SELECT inet_server_port()")).scalar()
        finally:
            engine.dispose()

    assert (url.port, server_port) == (6441, 5441)
