"""What read routing costs: W2 (gets) and W3 (add-and-commit units), single against routed.

``python -m benchmarks routing [--scale tiny|full] [--rounds N] [--topologies ...]``
``[--workloads W2,W3]``

On the replicated topologies of ``bash .ci/clusters up`` (``pg-replica``: the
PostgreSQL primary 5441 and its hot standby 5442; ``galera``: the node 3311
takes the writes, 3312 and 3313 serve the reads; ``mariadb-replica``: the
MariaDB primary 3321 and its asynchronous GTID replica 3322), each workload's userstore
variant (sync and async) runs in three modes, alternated round by round as
every benchmark's variants are (see :mod:`benchmarks.runner`):

- **single**: ``userstore.create_session_factory(primary)``
  (``create_async_session_factory``): every statement on the primary;
- **routed**: the same factory with ``replicas=[...]`` the topology's
  replicas: W2's gets are served by a replica, another server process on
  the same machine, so this mode's time also holds the difference between
  the two servers;
- **routed-to-primary**: ``replicas=[engine]``, a second engine on the
  primary's own URL: the routing code runs exactly as in "routed" (a
  replica is chosen, the reads go through its engine and pool), but the
  server is the one "single" reads from. Its ratio to "single" is the
  routing code's own cost.

A few percent is within the noise of a shared 2-core machine, so the routing
code's cost is also measured directly, as :mod:`benchmarks.observability`
measures its wrapper: each kind of ``RoutingSession.get_bind`` call and the
commit listeners, against the same calls on the single factory's session,
best of alternated repeats; times the calls each get and each unit makes
(counted on a probe run), over the single mode's time per operation.

The database is created on the primary and reaches the replicas by
replication; before any timing, and after each workload's preparation, the
run waits until every replica has replayed the primary's position, then runs
each variant once untimed. A topology that does not answer is skipped with
the reason (exit status 0).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy
from sqlalchemy import URL, Engine, event, insert, inspect, literal_column, make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

import userstore
from benchmarks.data import user_rows
from benchmarks.databases import BackendUnavailableError, admin_engine, database_on
from benchmarks.framework import (
    ASYNC,
    SYNC,
    USERSTORE,
    USERSTORE_ASYNC,
    BenchmarkError,
    Measured,
    Run,
    Variant,
    Workload,
)
from benchmarks.runner import WorkloadResult, run_workload
from benchmarks.scales import SCALES, Scale
from benchmarks.stack import Stack
from benchmarks.workloads import add_commit, get
from userstore import User, UserRepository, migrations
from userstore.errors import UserStoreError
from userstore.positions import primary_position, replica_reached
from userstore.routing import RoutingSession

SINGLE: Final = "single"
ROUTED: Final = "routed"
TO_PRIMARY: Final = "routed-to-primary"
MODES: Final = (SINGLE, ROUTED, TO_PRIMARY)
TARGET: Final = 1.05  # the issue's: routing overhead <= 5 % on W2 and W3
WORKLOADS: Final = {"W2": get.build, "W3": add_commit.build}

_CATCH_UP_SECONDS: Final = 120.0


@dataclass(frozen=True)
class Topology:
    """A primary and its replicas, as server URLs (the database is set per run)."""

    name: str
    backend: str
    primary: URL
    replicas: tuple[URL, ...]


def _url(variable: str, default: str) -> URL:
    return make_url(os.environ.get(variable) or default)


def topologies() -> dict[str, Topology]:
    """The clusters of ``.ci/clusters``, movable by the tests' variables (tests/clusters.py)."""
    galera = [
        _url(f"USERSTORE_TEST_GALERA{node}_URL", f"mariadb+pymysql://root@127.0.0.1:{port}/test")
        for node, port in enumerate((3311, 3312, 3313), start=1)
    ]
    return {
        "pg-replica": Topology(
            "pg-replica",
            "postgresql",
            _url(
                "USERSTORE_TEST_PG_PRIMARY_URL",
                "postgresql+psycopg://postgres@127.0.0.1:5441/postgres",
            ),
            (
                _url(
                    "USERSTORE_TEST_PG_STANDBY_URL",
                    "postgresql+psycopg://postgres@127.0.0.1:5442/postgres",
                ),
            ),
        ),
        "galera": Topology("galera", "mariadb", galera[0], tuple(galera[1:])),
        "mariadb-replica": Topology(
            "mariadb-replica",
            "mariadb",
            _url(
                "USERSTORE_TEST_MARIADB_PRIMARY_URL", "mariadb+pymysql://root@127.0.0.1:3321/test"
            ),
            (
                _url(
                    "USERSTORE_TEST_MARIADB_REPLICA_URL",
                    "mariadb+pymysql://root@127.0.0.1:3322/test",
                ),
            ),
        ),
    }


@contextmanager
def cluster_database(topology: Topology) -> Iterator[tuple[URL, list[URL]]]:
    """Create ``userstore_bench_<random>`` on the primary; yield its URL and its replicas'.

    Raises:
        BackendUnavailableError: the primary or a replica does not answer.
    """
    for url in topology.replicas:
        admin_engine(url, topology.backend).dispose()
    with database_on(topology.primary, topology.backend) as primary:
        yield primary, [url.set(database=primary.database) for url in topology.replicas]


def wait_for_replicas(primary: Engine, replicas: Sequence[Engine]) -> float:
    """Wait until every replica has replayed what the primary has committed; return seconds.

    The database itself may not have reached a replica yet (its connections
    fail until it has): those are retried too.
    """
    started = time.monotonic()
    with primary.connect() as connection:
        wanted = primary_position(connection)
    for replica in replicas:
        problem = "behind"
        while True:
            try:
                with replica.connect() as connection:
                    if replica_reached(connection, wanted) is not None:
                        break
            except (UserStoreError, sqlalchemy.exc.SQLAlchemyError) as exc:
                problem = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            if time.monotonic() - started > _CATCH_UP_SECONDS:
                raise BenchmarkError(
                    f"{replica.url.render_as_string()} did not replay the primary's position "
                    f"within {_CATCH_UP_SECONDS:.0f} s ({problem})"
                )
            time.sleep(0.05)
    return time.monotonic() - started


@dataclass
class Engines:
    """The engines one topology's run uses besides the stack's (which is on the primary)."""

    replicas: list[Engine]
    second: Engine  # another engine on the primary's URL: the "replica" of routed-to-primary
    async_replicas: list[AsyncEngine] = field(default_factory=list)
    async_second: AsyncEngine | None = None

    @classmethod
    def open(cls, stack: Stack, replica_urls: list[URL]) -> Engines:
        engines = cls(
            replicas=[userstore.create_engine(url) for url in replica_urls],
            second=userstore.create_engine(stack.url),
        )
        if stack.asynchronous is not None:
            engines.async_replicas = [userstore.create_async_engine(url) for url in replica_urls]
            engines.async_second = userstore.create_async_engine(stack.url)
        return engines

    def warm_up(self, stack: Stack) -> None:
        """Open a pooled connection of every engine, so no timed run pays for connecting."""
        stack.warm_up()
        for engine in (*self.replicas, self.second):
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1").all()
        if stack.asynchronous is not None:

            async def connect() -> None:
                for engine in (*self.async_replicas, self.async_second):
                    assert engine is not None
                    async with engine.connect() as connection:
                        (await connection.exec_driver_sql("SELECT 1")).all()

            stack.asynchronous.run(connect())

    def close(self, stack: Stack) -> None:
        if stack.asynchronous is not None:

            async def dispose() -> None:
                for engine in (*self.async_replicas, self.async_second):
                    if engine is not None:
                        await engine.dispose()

            stack.asynchronous.run(dispose())
        for engine in (*self.replicas, self.second):
            engine.dispose()


@dataclass
class Factories:
    """Each mode's session factory, sync and async."""

    sync: dict[str, sessionmaker[Session]]
    asynchronous: dict[str, async_sessionmaker[AsyncSession]]

    @classmethod
    def build(cls, stack: Stack, engines: Engines) -> Factories:
        primary = stack.engine
        sync = {
            SINGLE: userstore.create_session_factory(primary),
            ROUTED: userstore.create_session_factory(primary, replicas=engines.replicas),
            TO_PRIMARY: userstore.create_session_factory(primary, replicas=[engines.second]),
        }
        asynchronous: dict[str, async_sessionmaker[AsyncSession]] = {}
        if stack.asynchronous is not None and engines.async_second is not None:
            engine = stack.asynchronous.engine
            asynchronous = {
                SINGLE: userstore.create_async_session_factory(engine),
                ROUTED: userstore.create_async_session_factory(
                    engine, replicas=engines.async_replicas
                ),
                TO_PRIMARY: userstore.create_async_session_factory(
                    engine, replicas=[engines.async_second]
                ),
            }
        return cls(sync, asynchronous)


def _port_statement(backend: str) -> sqlalchemy.Select[Any]:
    """A plain read (so a routed session sends it to its replica) of the server's port."""
    if backend == "postgresql":
        return select(sqlalchemy.func.inet_server_port())
    return select(literal_column("@@port"))


def check_routing(stack: Stack, factories: Factories, topology: Topology) -> str:
    """Read each mode's server port through its factory; fail unless reads go where expected."""
    statement = _port_statement(stack.backend)
    primary_port = topology.primary.port or 0
    replica_ports = {url.port or 0 for url in topology.replicas}
    expected = {SINGLE: {primary_port}, ROUTED: replica_ports, TO_PRIMARY: {primary_port}}
    seen: dict[str, set[int]] = {}
    for mode, factory in factories.sync.items():
        for _ in topology.replicas:  # routed sessions take the replicas in turn
            with factory() as session:
                seen.setdefault(f"{SYNC} {mode}", set()).add(
                    int(session.execute(statement).scalar_one())
                )
    if stack.asynchronous is not None:

        async def read_ports(factory: async_sessionmaker[AsyncSession]) -> set[int]:
            ports = set()
            for _ in topology.replicas:
                async with factory() as session:
                    ports.add(int((await session.execute(statement)).scalar_one()))
            return ports

        for mode, async_factory in factories.asynchronous.items():
            seen[f"{ASYNC} {mode}"] = stack.asynchronous.run(read_ports(async_factory))
    for label, ports in seen.items():
        mode = label.partition(" ")[2]
        if not ports <= expected[mode]:
            raise BenchmarkError(
                f"{label}: reads served by port(s) {sorted(ports)}, "
                f"expected {sorted(expected[mode])}"
            )
    return ", ".join(f"{label} -> {sorted(ports)}" for label, ports in seen.items())


def in_mode(stack: Stack, factories: Factories, mode: str, run: Run) -> Run:
    """``run`` with the stack's userstore session factories swapped for ``mode``'s."""

    def run_in_mode() -> Measured | None:
        asynchronous = stack.asynchronous
        saved = (
            stack.userstore_sessions,
            None if asynchronous is None else asynchronous.userstore_sessions,
        )
        stack.userstore_sessions = factories.sync[mode]
        if asynchronous is not None and factories.asynchronous:
            asynchronous.userstore_sessions = factories.asynchronous[mode]
        try:
            return run()
        finally:
            stack.userstore_sessions = saved[0]
            if asynchronous is not None and saved[1] is not None:
                asynchronous.userstore_sessions = saved[1]

    return run_in_mode


def routed_workload(workload: Workload, stack: Stack, factories: Factories) -> Workload:
    """The workload's userstore variants (sync and async), once per mode."""
    variants = []
    for name, flavour in ((USERSTORE, SYNC), (USERSTORE_ASYNC, ASYNC)):
        base = next(variant for variant in workload.variants if variant.name == name)
        for mode in MODES:
            label = f"{flavour}: {mode}"
            if base.run is None:
                variants.append(Variant.not_available(label, base.unavailable or "n/a", flavour))
            else:
                variants.append(
                    Variant(label, in_mode(stack, factories, mode, base.run), flavour=flavour)
                )
    workload.variants = variants
    return workload


def prepared_and_warm(
    workload: Workload, primary: Engine, replicas: Sequence[Engine]
) -> Callable[[], None]:
    """The workload's ``prepare``, then a wait for the replicas, then one untimed run per mode.

    The router cannot know what ``prepare`` wrote behind its back, so the
    replicas must have it before a routed read. The untimed runs take every
    engine's first-use costs (the driver's prepared statements and type
    lookups on a connection that has only run ``SELECT 1``) out of round 1.
    """
    prepare = workload.prepare

    def prepare_wait_and_warm() -> None:
        prepare()
        seconds = wait_for_replicas(primary, replicas)
        _progress(f"  replicas caught up {seconds:.2f} s after the preparation")
        for variant in workload.variants:
            if variant.run is None:
                continue
            workload.reset()
            try:
                variant.run()
                workload.check()
            except Exception as exc:  # the timed runs fail too, and are reported
                _progress(f"  warm-up run of {variant.name} failed: {type(exc).__name__}: {exc}")

    return prepare_wait_and_warm


# The routing code's own cost, measured directly.

READ: Final = "read"  # get_bind of a plain SELECT: the unit of work's replica
WRITE: Final = "write statement"  # get_bind of INSERT/UPDATE/DELETE/FOR UPDATE: the primary
FLUSH: Final = "flush"  # get_bind while flushing: the primary
NO_CLAUSE: Final = "no statement"  # get_bind() alone (the repository asks for the dialect)
NAMED: Final = "bind named"  # get_bind(bind=...): the caller's bind
GET_BIND_KINDS: Final = (READ, WRITE, FLUSH, NO_CLAUSE)
# The session events a RoutingSession may listen to in a unit of work, each
# with the arguments its listeners take (beyond the session).
EVENTS: Final = ("before_commit", "after_commit", "after_transaction_end", "after_rollback")


def listened_events(session: Session) -> list[str]:
    """The events of :data:`EVENTS` that ``session`` (a RoutingSession) has listeners for."""
    return [name for name in EVENTS if len(getattr(session.dispatch, name)) > 0]


@contextmanager
def counted_routing_calls(events: Sequence[str]) -> Iterator[Counter[str]]:
    """Count ``RoutingSession.get_bind`` calls by kind, and its listened events, meanwhile."""
    counts: Counter[str] = Counter()
    original = RoutingSession.get_bind

    def counting(
        self: RoutingSession,
        mapper: Any = None,
        *,
        clause: Any = None,
        bind: Any = None,
        **kwargs: Any,
    ) -> Any:
        if bind is not None:
            counts[NAMED] += 1
        elif self._flushing:
            counts[FLUSH] += 1
        elif clause is None:
            counts[NO_CLAUSE] += 1
        elif isinstance(clause, sqlalchemy.Select) and clause._for_update_arg is None:
            counts[READ] += 1
        else:
            counts[WRITE] += 1
        return original(self, mapper, clause=clause, bind=bind, **kwargs)

    def counter(name: str) -> Callable[..., None]:
        def count(*_arguments: Any) -> None:
            counts[name] += 1

        return count

    listeners = [(name, counter(name)) for name in events]
    RoutingSession.get_bind = counting  # type: ignore[method-assign]
    for name, listener in listeners:
        event.listen(RoutingSession, name, listener)
    try:
        yield counts
    finally:
        RoutingSession.get_bind = original  # type: ignore[method-assign]
        for name, listener in listeners:
            event.remove(RoutingSession, name, listener)


def calls_per_operation(
    stack: Stack, factory: sessionmaker[Session], operations: int
) -> dict[str, dict[str, float]]:
    """The routing calls, by kind, of one W3 unit and of one W2 get (a routed probe run)."""
    rows = user_rows(operations)
    stack.raw.clear_users()
    with factory() as session:
        events = listened_events(session)
    with counted_routing_calls(events) as unit_calls, factory() as session:
        repo = UserRepository(session)
        for name, number in rows:
            repo.add(User(name=name, number=number))
            repo.commit()
    with counted_routing_calls(events) as get_calls, factory() as session:
        repo = UserRepository(session)
        for name, _ in rows:
            if repo.get(name) is None:
                raise BenchmarkError(f"the probe's user {name} was not found")
    stack.raw.clear_users()
    return {
        "W2": {kind: count / operations for kind, count in get_calls.items()},
        "W3": {kind: count / operations for kind, count in unit_calls.items()},
    }


def routing_cost_ns(
    primary: Engine, second: Engine, calls: int = 200_000, repeats: int = 7
) -> dict[str, float]:
    """Nanoseconds a routed session adds per call of each kind, best of alternated repeats.

    Each kind is timed on a session of the routed factory and on one of the
    single factory (where get_bind is SQLAlchemy's and no routing listener
    runs), both inside a transaction, as the workloads call them. Before each
    timed loop the routed session's own state is put back as it was after
    its unit of work's first read (a replica chosen, nothing written).
    """
    mapper = inspect(User)
    read = select(User).where(User.name == "user00000001")
    write = insert(User)
    single = userstore.create_session_factory(primary)
    routed = userstore.create_session_factory(primary, replicas=[second])
    best: dict[tuple[str, str], float] = {}
    with single() as plain, routed() as routing:
        events = listened_events(routing)
        plain.connection()
        routing.get_bind(mapper, clause=read)  # chooses the replica (and opens its connection)
        own = set(vars(routing)) - set(vars(plain))  # what RoutingSession adds to a session
        after_first_read = {name: vars(routing)[name] for name in own}

        def loops(session: Session) -> dict[str, Callable[[], Any]]:
            dispatch = session.dispatch
            root = session.get_transaction()

            def flushing() -> None:
                session._flushing = True
                try:
                    session.get_bind(mapper)
                finally:
                    session._flushing = False

            def after_a_write(name: str) -> Callable[[], Any]:
                emit = getattr(dispatch, name)
                arguments = (session, root) if name == "after_transaction_end" else (session,)

                def run() -> None:
                    session._wrote = True  # type: ignore[attr-defined]  # as after a flush
                    emit(*arguments)

                return run

            calls: dict[str, Callable[[], Any]] = {
                READ: functools.partial(session.get_bind, mapper, clause=read),
                WRITE: functools.partial(session.get_bind, mapper, clause=write),
                FLUSH: flushing,
                NO_CLAUSE: session.get_bind,
            }
            return calls | {name: after_a_write(name) for name in events}

        runs = {SINGLE: loops(plain), ROUTED: loops(routing)}
        kinds = (*GET_BIND_KINDS, *events)
        for _ in range(repeats):
            for kind in kinds:
                for mode in (SINGLE, ROUTED):
                    call = runs[mode][kind]
                    vars(routing).update(after_first_read)
                    started = time.perf_counter()
                    for _ in range(calls):
                        call()
                    elapsed = time.perf_counter() - started
                    best[mode, kind] = min(best.get((mode, kind), float("inf")), elapsed)
        vars(routing).update(after_first_read)
        routing.rollback()
    return {kind: (best[ROUTED, kind] - best[SINGLE, kind]) / calls * 1e9 for kind in kinds}


@dataclass
class DirectCost:
    """One topology's counted calls per operation and measured cost per call."""

    topology: str
    per_operation: dict[str, dict[str, float]]
    cost_ns: dict[str, float]

    def ns_per_operation(self, workload: str) -> float:
        return sum(
            count * self.cost_ns.get(kind, 0.0)
            for kind, count in self.per_operation[workload].items()
        )


def table(results: list[WorkloadResult]) -> str:
    """Median time per operation in each mode, and its ratio to single (medians; bests)."""
    lines = [
        "| Workload | Topology | Flavour | single µs/op | routed µs/op | routed / single "
        "| routed-to-primary µs/op | routed-to-primary / single |",
        "| --- | --- | --- | --: | --: | --: | --: | --: |",
    ]
    for result in results:
        operations = result.workload.operations
        for flavour in (SYNC, ASYNC):
            medians: dict[str, float | None] = {}
            bests: dict[str, float | None] = {}
            for mode in MODES:
                variant = result.variant(f"{flavour}: {mode}")
                median = None if variant is None else variant.median_seconds
                medians[mode] = None if median is None else median / operations
                bests[mode] = None if median is None or variant is None else min(variant.seconds)
            lines.append(
                f"| {result.workload.key} | {result.backend} | {flavour} | "
                + _per_operation(medians[SINGLE])
                + "".join(
                    f" | {_per_operation(medians[mode])} | {_ratio(medians, bests, mode)}"
                    for mode in (ROUTED, TO_PRIMARY)
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def _per_operation(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.1f}"


def _ratio(medians: dict[str, float | None], bests: dict[str, float | None], mode: str) -> str:
    median, base = medians[mode], medians[SINGLE]
    best, best_base = bests[mode], bests[SINGLE]
    if median is None or not base or best is None or not best_base:
        return "n/a"
    return f"{median / base:.3f}x (best {best / best_base:.3f}x)"


def direct_table(results: list[WorkloadResult], costs: list[DirectCost]) -> str:
    lines = []
    for cost in costs:
        measured = ", ".join(f"{kind} {ns:+.0f} ns" for kind, ns in cost.cost_ns.items())
        counted = "; ".join(
            f"{workload}: "
            + ", ".join(f"{kind} x{count:g}" for kind, count in sorted(calls.items()))
            for workload, calls in cost.per_operation.items()
        )
        lines.append(f"- {cost.topology}: per call, routed minus single: {measured}.")
        lines.append(f"  Calls per operation: {counted}.")
    lines += [
        "",
        "| Workload | Topology | Flavour | single µs/op | routing code ns/op | share | "
        f"target <= {TARGET - 1:.0%} |",
        "| --- | --- | --- | --: | --: | --: | --- |",
    ]
    by_topology = {cost.topology: cost for cost in costs}
    for result in results:
        measured_cost = by_topology.get(result.backend)
        if measured_cost is None:
            continue
        extra = measured_cost.ns_per_operation(result.workload.key)
        for flavour in (SYNC, ASYNC):
            variant = result.variant(f"{flavour}: {SINGLE}")
            median = None if variant is None else variant.median_seconds
            if median is None:
                continue
            per_operation = median / result.workload.operations
            share = extra * 1e-9 / per_operation
            verdict = "met" if share <= TARGET - 1 else "**missed**"
            lines.append(
                f"| {result.workload.key} | {result.backend} | {flavour} | "
                f"{per_operation * 1e6:.1f} | {extra:.0f} | {share:.2%} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def _run_topology(
    topology: Topology,
    scale: Scale,
    rounds: int,
    results: list[WorkloadResult],
    costs: list[DirectCost],
    servers: dict[str, str],
    workloads: Sequence[str] = tuple(WORKLOADS),
) -> None:
    with cluster_database(topology) as (url, replica_urls):
        _progress(f"{topology.name}: migrating {url.render_as_string()}")
        migrations.upgrade(url)
        stack = Stack.open(topology.backend, url)
        if stack.async_unavailable:
            _progress(f"{topology.name}: async variants n/a: {stack.async_unavailable}")
        engines = Engines.open(stack, replica_urls)
        try:
            servers[topology.name] = stack.raw.server_version()
            seconds = wait_for_replicas(stack.engine, engines.replicas)
            _progress(f"{topology.name}: the schema reached the replicas in {seconds:.2f} s")
            engines.warm_up(stack)
            factories = Factories.build(stack, engines)
            _progress(
                f"{topology.name}: reads served by: " + check_routing(stack, factories, topology)
            )
            for build in (WORKLOADS[key] for key in workloads):
                workload = routed_workload(build(stack, scale), stack, factories)
                workload.prepare = prepared_and_warm(workload, stack.engine, engines.replicas)
                results.append(run_workload(workload, topology.name, rounds, _progress))
            _progress(f"{topology.name}: measuring the routing code's cost per call")
            per_operation = calls_per_operation(
                stack, factories.sync[TO_PRIMARY], min(scale.units, 200)
            )
            costs.append(
                DirectCost(
                    topology.name, per_operation, routing_cost_ns(stack.engine, engines.second)
                )
            )
        finally:
            engines.close(stack)
            stack.close()


def main(argv: Sequence[str] | None = None) -> int:
    known = topologies()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks routing",
        description="What read routing costs on W2 and W3: single primary against routed "
        "(replicas=) and routed to a second engine on the primary.",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--rounds", type=int, help="default: 9 at full scale, 1 at tiny")
    parser.add_argument(
        "--topologies", default=",".join(known), help="comma-separated, from: " + ",".join(known)
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated, from: W2,W3"
    )
    args = parser.parse_args(argv)
    workloads = [key.strip() for key in args.workloads.split(",") if key.strip()]
    if not workloads or any(key not in WORKLOADS for key in workloads):
        parser.error(f"--workloads takes a comma-separated list from W2,W3, got {args.workloads!r}")
    scale: Scale = SCALES[args.scale]
    rounds = args.rounds or (9 if scale.name == "full" else 1)
    names = [name.strip() for name in args.topologies.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown topologies {unknown}; known: {', '.join(known)}")
    started = time.monotonic()
    results: list[WorkloadResult] = []
    costs: list[DirectCost] = []
    servers: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            _run_topology(known[name], scale, rounds, results, costs, servers, workloads)
        except BackendUnavailableError as exc:
            skipped[name] = str(exc)
            _progress(f"{name}: skipped: {exc}")
    minutes = (time.monotonic() - started) / 60
    print(
        f"Scale {scale.name}: W2 {scale.gets:,} gets of {scale.get_table_rows:,} users, "
        f"W3 {scale.units:,} units; {rounds} rounds (modes alternated within each round), "
        f"median per operation; the run took {minutes:.1f} minutes, load average at the end "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}."
    )
    for name, version in servers.items():
        print(f"- {name}: {version}")
    for name, reason in skipped.items():
        print(f"- {name}: skipped: {reason}")
    print()
    if results:
        print(table(results))
        missing = [
            f"- {result.workload.key} {result.backend} {variant.name}: {variant.why_no_result}"
            for result in results
            for variant in result.variants
            if variant.why_no_result is not None
        ]
        if missing:
            print("\n".join(missing) + "\n")
        print(direct_table(results, costs), end="")
    failures = [f"{r.workload.key} {r.backend} {v.name}" for r in results for v in r.failures]
    if failures:
        _progress("failed: " + ", ".join(failures))
    return 1 if failures else 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
