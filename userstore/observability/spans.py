"""The OpenTelemetry span of one repository call (imported only once tracing is on).

One span per public call, named ``userstore.<operation>``, made the current
span while the call runs, so the spans of SQLAlchemy's own instrumentation
(and anything else the call does) are its children, and it is a child of the
app's current span.
"""

from __future__ import annotations

from typing import Any, Final

from opentelemetry import context, trace
from opentelemetry.trace import Span, Status, StatusCode

from userstore.observability.tracing import provider

INSTRUMENTATION_NAME: Final = "userstore"
# The OpenTelemetry semantic conventions' db.system value of each backend.
_DB_SYSTEM: Final = {"sqlite": "sqlite", "postgresql": "postgresql", "mariadb": "mariadb"}


class _Cache:
    """The tracer of the provider last used, so a call does not ask for one."""

    provider: Any = None
    tracer: trace.Tracer | None = None


_cache: Final = _Cache()


def _tracer() -> trace.Tracer:
    chosen = provider.override
    if chosen is None:
        chosen = trace.get_tracer_provider()
    if chosen is not _cache.provider or _cache.tracer is None:
        _cache.tracer = chosen.get_tracer(INSTRUMENTATION_NAME)
        _cache.provider = chosen
    return _cache.tracer


def start(operation: str, backend: str) -> tuple[Span, Any]:
    """Start the call's span as the current span; return it and the token to restore."""
    attributes: dict[str, str] = {
        "userstore.operation": operation,
        "userstore.backend": backend,
    }
    db_system = _DB_SYSTEM.get(backend)
    if db_system is not None:
        attributes["db.system"] = db_system
    # A span processor's on_start that raises does so from start_span: no
    # span to end and nothing attached, so the call runs without one.
    span = _tracer().start_span(
        f"userstore.{operation}",
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )
    try:
        return span, context.attach(trace.set_span_in_context(span))
    except BaseException:
        span.end()
        raise


def finish(
    span: Span,
    token: Any,  # (what context.attach returns: a Token, typed object before API 1.28)
    rows: int | None,
    error: BaseException | None,
    code: str | int | None,
) -> None:
    """Restore the app's current span and end the call's, with its outcome.

    The app's span is restored first, and the span ended, whatever setting its
    attributes or ending it raises (the first error is raised afterwards).
    """
    context.detach(token)
    try:
        if rows is not None:
            span.set_attribute("userstore.rows", rows)
        if error is not None:
            name = type(error).__name__
            span.set_status(Status(StatusCode.ERROR, f"{name}: {error}"))
            span.set_attribute("error.type", name)
            if code is not None:
                span.set_attribute("db.response.status_code", str(code))
                span.set_attribute("userstore.error.code", code)
            span.record_exception(error)
    finally:
        span.end()
