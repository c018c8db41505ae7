"""OpenTelemetry spans: one per repository call, under the app's span, over SQLAlchemy's.

Spans are caught with the SDK's in-memory exporter, on a tracer provider handed
to userstore with ``use_tracer_provider`` (the process-wide provider can be set
once only; the subprocess tests set it, and check the global path). Every test
runs on each backend, sync and async; the in-memory fake has its own.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import URL, Engine, text

import userstore
from tests.observability_support import (
    EVERY_CALL,
    Units,
    async_failures,
    async_verbs,
    run_async,
    sync_failures,
    sync_verbs,
)
from userstore import (
    AsyncUserRepository,
    ConfigurationError,
    User,
    UserNotFoundError,
    UserRepository,
)
from userstore.observability import use_tracer_provider
from userstore.testing import InMemoryUserStore

with warnings.catch_warnings():
    # The lowest supported instrumentation (0.48b0) imports setuptools' deprecated pkg_resources.
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", DeprecationWarning)
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

DUPLICATE_CODE = {
    "sqlite": "SQLITE_CONSTRAINT_PRIMARYKEY",
    "postgresql": "23505",
    "mariadb": "1062",
}


class Traced:
    """The provider userstore traces with during a test, and what it exported."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.app = self.provider.get_tracer("the app")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def ours(self) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name.startswith("userstore.")]

    def names(self) -> list[str]:
        return [span.name for span in self.ours()]

    def only(self, name: str) -> ReadableSpan:
        (span,) = (span for span in self.spans() if span.name == name)
        return span


@pytest.fixture
def traced() -> Iterator[Traced]:
    traced = Traced()
    use_tracer_provider(traced.provider)
    yield traced
    use_tracer_provider(None)
    traced.provider.shutdown()


@pytest.fixture
def instrument_sqlalchemy(traced: Traced) -> Iterator[Callable[[Engine], None]]:
    """Put OpenTelemetry's SQLAlchemy instrumentation on an engine, for this test only."""
    instrumentor = SQLAlchemyInstrumentor()

    def instrument(engine: Engine) -> None:
        # skip_dep_check: the instrumentation's declared SQLAlchemy range may end before 2.1.
        instrumentor.instrument(engine=engine, tracer_provider=traced.provider, skip_dep_check=True)

    yield instrument
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def no_users(plain_engine: Engine) -> None:
    with plain_engine.begin() as connection:
        connection.execute(text("DELETE FROM users"))


def check_every_verb(traced: Traced, backend: str) -> None:
    """One span per public call, children of the app's span, with backend and rows."""
    request = traced.only("request")
    spans = traced.ours()
    assert [span.name for span in spans] == [
        f"userstore.{operation}" for operation, _ in EVERY_CALL
    ]
    assert [span.attributes.get("userstore.rows") for span in spans] == [
        rows for _, rows in EVERY_CALL
    ]
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == request.context.span_id
        assert span.attributes["userstore.backend"] == backend
        assert span.attributes["userstore.operation"] == span.name.removeprefix("userstore.")
        if backend == "memory":
            assert "db.system" not in span.attributes
        else:
            assert span.attributes["db.system"] == backend
        assert span.status.status_code is StatusCode.UNSET


def test_each_sync_call_is_one_span_under_the_apps_span_with_backend_and_rows(
    backend: str, engine: Engine, no_users: None, traced: Traced
):
    with (
        traced.app.start_as_current_span("request"),
        userstore.create_session_factory(engine)() as session,
    ):
        sync_verbs(UserRepository(session))
    check_every_verb(traced, backend)


def test_each_async_call_is_one_span_under_the_apps_span_with_backend_and_rows(
    backend: str, database_url: URL, no_users: None, traced: Traced
):
    async def work(_engine: Any, sessions: Any) -> None:
        with traced.app.start_as_current_span("request"):
            async with sessions() as session:
                await async_verbs(AsyncUserRepository(session))

    run_async(database_url, work)
    check_every_verb(traced, backend)


def test_each_call_on_the_in_memory_fake_is_one_span_with_backend_memory(traced: Traced):
    with traced.app.start_as_current_span("request"):
        sync_verbs(InMemoryUserStore().repository())
    check_every_verb(traced, "memory")


def test_each_call_on_the_async_in_memory_fake_is_one_span_with_backend_memory(traced: Traced):
    async def main() -> None:
        with traced.app.start_as_current_span("request"):
            await async_verbs(InMemoryUserStore().async_repository())

    asyncio.run(main())
    check_every_verb(traced, "memory")


def check_statements_are_children(traced: Traced) -> None:
    """Every SQLAlchemy statement span lies under a userstore span, under the app's."""
    ours = {span.context.span_id: span for span in traced.ours()}
    request = traced.only("request")
    statements = [
        span
        for span in traced.spans()
        if span.name != "request" and not span.name.startswith("userstore.")
    ]
    assert "SELECT" in {span.name.split()[0] for span in statements}
    for span in statements:
        assert span.parent is not None, span.name
        assert span.parent.span_id in ours, span.name
    for span in ours.values():
        assert span.parent is not None
        assert span.parent.span_id == request.context.span_id
    get_one = next(span for span in ours.values() if span.name == "userstore.get_one")
    assert any(
        span.parent.span_id == get_one.context.span_id and span.name.startswith("SELECT")
        for span in statements
        if span.parent is not None
    )


def test_sqlalchemy_statement_spans_are_children_of_the_sync_call_span(
    engine: Engine,
    no_users: None,
    traced: Traced,
    instrument_sqlalchemy: Callable[[Engine], None],
):
    instrument_sqlalchemy(engine)
    with (
        traced.app.start_as_current_span("request"),
        userstore.create_session_factory(engine)() as session,
    ):
        repo = UserRepository(session)
        repo.add_many([("ann", 1), ("bob", 2)])
        repo.commit()
        repo.get_one("ann")
        repo.upsert("cid", 3)
        repo.commit()
    check_statements_are_children(traced)


def test_sqlalchemy_statement_spans_are_children_of_the_async_call_span(
    database_url: URL,
    no_users: None,
    traced: Traced,
    instrument_sqlalchemy: Callable[[Engine], None],
):
    async def work(engine: Any, sessions: Any) -> None:
        instrument_sqlalchemy(engine.sync_engine)
        with traced.app.start_as_current_span("request"):
            async with sessions() as session:
                repo = AsyncUserRepository(session)
                await repo.add_many([("ann", 1), ("bob", 2)])
                await repo.commit()
                await repo.get_one("ann")
                await repo.upsert("cid", 3)
                await repo.commit()

    run_async(database_url, work)
    check_statements_are_children(traced)


def check_failed_spans(traced: Traced, backend: str) -> None:
    failed = [span for span in traced.ours() if span.status.status_code is StatusCode.ERROR]
    assert [span.name for span in failed] == ["userstore.get_one", "userstore.commit"]
    not_found, duplicate = failed
    assert not_found.attributes["error.type"] == "UserNotFoundError"
    assert duplicate.attributes["error.type"] == "DuplicateUserError"
    assert duplicate.attributes["db.response.status_code"] == DUPLICATE_CODE[backend]
    assert str(duplicate.attributes["userstore.error.code"]) == DUPLICATE_CODE[backend]
    assert "userstore.rows" not in duplicate.attributes
    assert duplicate.status.description.startswith("DuplicateUserError: ")
    (event,) = duplicate.events
    assert event.name == "exception"
    assert str(event.attributes["exception.type"]).endswith("DuplicateUserError")


def test_a_failed_sync_call_has_status_error_its_class_and_the_driver_code(
    backend: str, engine: Engine, no_users: None, traced: Traced
):
    sync_failures(userstore.create_session_factory(engine))
    check_failed_spans(traced, backend)


def test_a_failed_async_call_has_status_error_its_class_and_the_driver_code(
    backend: str, database_url: URL, no_users: None, traced: Traced
):
    run_async(database_url, async_failures)
    check_failed_spans(traced, backend)


def test_a_refused_argument_is_an_error_span_without_a_code(traced: Traced, engine: Engine):
    with (
        userstore.create_session_factory(engine)() as session,
        pytest.raises(userstore.InvalidUserError),
    ):
        UserRepository(session).get("x" * 300)
    (span,) = traced.ours()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "InvalidUserError"
    assert "db.response.status_code" not in span.attributes


def test_spans_name_the_backend_of_each_engine_when_several_share_a_process(
    backend: str, engine: Engine, no_users: None, traced: Traced, tmp_path: Any
):
    other = userstore.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        userstore.migrations.upgrade(other)
        traced.exporter.clear()
        for each in (engine, other):
            with userstore.create_session_factory(each)() as session:
                UserRepository(session).count()
        InMemoryUserStore().repository().count()
    finally:
        other.dispose()
    backends = [span.attributes["userstore.backend"] for span in traced.ours()]
    assert backends == [backend, "sqlite", "memory"]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_spans_start_once_the_app_sets_its_global_provider_even_after_userstore_was_imported():
    result = run_python(
        """
        import sys
        import userstore
        from userstore import User, UserRepository, migrations

        engine = userstore.create_engine("sqlite://")
        migrations.upgrade(engine)
        with userstore.create_session_factory(engine)() as session:
            repo = UserRepository(session)
            repo.add(User(name="ann", number=1))
            repo.commit()
            assert not any(name.startswith("opentelemetry") for name in sys.modules)

            from opentelemetry import trace
            repo.count()  # the API is loaded, its provider still the do-nothing proxy
            assert "userstore.observability.spans" not in sys.modules

            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            repo.get_one("ann")
        print([span.name for span in exporter.get_finished_spans()])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['userstore.get_one']"


def test_userstore_works_and_traces_nothing_when_opentelemetry_cannot_be_imported():
    result = run_python(
        """
        import importlib.abc
        import logging
        import sys

        class NoOpenTelemetry(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoOpenTelemetry())
        import userstore
        from userstore import User, UserRepository, migrations
        from userstore.observability import set_slow_call_threshold

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("userstore").addHandler(handler)
        logging.getLogger("userstore").setLevel(logging.DEBUG)
        set_slow_call_threshold(3600)
        engine = userstore.create_engine("sqlite://")
        migrations.upgrade(engine)
        with userstore.create_session_factory(engine)() as session:
            repo = UserRepository(session)
            repo.add(User(name="ann", number=1))
            repo.commit()
            assert repo.get_one("ann").number == 1
        assert not any(name.startswith("opentelemetry") for name in sys.modules)
        print([record.userstore_operation for record in records if record.name == "userstore"])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['add', 'commit', 'get_one']"


@pytest.fixture
def units(backend: str, empty_table: None, request: pytest.FixtureRequest) -> Units:
    return Units(backend, request)


def test_calls_made_inside_a_call_are_spans_of_their_own_under_it(units: Units, traced: Traced):
    async def main() -> None:
        other = InMemoryUserStore().repository()  # (SQLite would lock out a second session)
        async with units.async_() as repo:
            returned = asyncio.Event()
            tasks = []

            async def later() -> None:
                await returned.wait()
                await repo.count()

            def rows() -> Any:
                other.exists("ann")
                tasks.append(asyncio.get_running_loop().create_task(later()))
                yield ("ann", 1)

            await repo.add_many(rows())
            returned.set()
            await asyncio.gather(*tasks)
            await repo.rollback()

    with units.sync() as repo:
        repo.add_many((name, 1) for name in ["ann"] if not repo.exists(name))
        repo.rollback()
    asyncio.run(main())
    spans = traced.ours()
    assert [span.name for span in spans] == [
        "userstore.exists",
        "userstore.add_many",
        "userstore.rollback",
        "userstore.exists",
        "userstore.add_many",
        "userstore.count",
        "userstore.rollback",
    ]
    add_many = spans[4]
    for inner in (spans[0], spans[3], spans[5]):  # made while add_many ran, or started then
        assert inner.parent is not None
    assert spans[0].parent.span_id == spans[1].context.span_id  # type: ignore[union-attr]
    assert spans[3].parent.span_id == add_many.context.span_id  # type: ignore[union-attr]
    assert spans[5].parent.span_id == add_many.context.span_id  # type: ignore[union-attr]


class ExplodingProcessor(SpanProcessor):
    """A span processor of the app's that raises on userstore's spans."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if self.where == "on_start" and span.name.startswith("userstore."):
            raise RuntimeError("the app's span processor exploded")

    def on_end(self, span: ReadableSpan) -> None:
        if self.where == "on_end" and span.name.startswith("userstore."):
            raise RuntimeError("the app's span processor exploded")


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("where", ["on_start", "on_end"])
def test_a_span_processor_that_raises_changes_no_calls_outcome_and_leaves_no_span_current(
    units: Units,
    api: str,
    where: str,
    traced: Traced,
    stored: Callable[[], list[tuple[str, int | None]]],
    capsys: pytest.CaptureFixture[str],
):
    traced.provider.add_span_processor(ExplodingProcessor(where))
    user = User(name="ann", number=1)
    current: list[bool] = []

    def request_is_current(request: Any) -> None:
        current.append(trace.get_current_span() is request)

    with traced.app.start_as_current_span("request") as request:
        if api == "sync":
            with units.sync() as repo:
                assert repo.add(user) is user
                request_is_current(request)
                repo.commit()
                with pytest.raises(UserNotFoundError):
                    repo.get_one("nobody")
                request_is_current(request)
        else:

            async def main() -> None:
                async with units.async_() as repo:
                    assert await repo.add(user) is user
                    request_is_current(request)
                    await repo.commit()
                    with pytest.raises(UserNotFoundError):
                        await repo.get_one("nobody")
                    request_is_current(request)

            asyncio.run(main())
    assert current == [True, True]
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert stored() == [("ann", 1)]
    if where == "on_end":  # exported by the processor before the one that raised
        assert traced.names() == ["userstore.add", "userstore.commit", "userstore.get_one"]
    else:
        assert traced.names() == []
    err = capsys.readouterr().err
    assert err.count("RuntimeError: the app's span processor exploded") == 3


def test_a_span_processor_that_raises_is_not_reported_when_logging_raise_exceptions_is_off(
    traced: Traced, capsys: pytest.CaptureFixture[str], monkeypatch: Any
):
    monkeypatch.setattr(logging, "raiseExceptions", False)
    traced.provider.add_span_processor(ExplodingProcessor("on_end"))
    assert InMemoryUserStore().repository().count() == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", ["x", 1, object()])
def test_a_tracer_provider_without_get_tracer_is_refused_and_the_one_in_use_kept(
    bad: Any, traced: Traced
):
    with pytest.raises(ConfigurationError, match="get_tracer"):
        use_tracer_provider(bad)
    InMemoryUserStore().repository().count()
    assert traced.names() == ["userstore.count"]
