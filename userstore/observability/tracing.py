"""Whether userstore traces its calls, and with which tracer provider; no OpenTelemetry import.

userstore never imports OpenTelemetry itself until tracing is on: that is,
until the app has set a global tracer provider (which it can only do having
imported ``opentelemetry.trace``), or handed one to
:func:`use_tracer_provider`. While the global provider is still the API's
default (a proxy whose spans record nothing), no span is started at all, so a
call costs the same as with the extra not installed. Spans start on the first
call after the app sets its provider, even one set after userstore was
imported.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from userstore.errors import ConfigurationError


class _Provider:
    """The tracer provider given to :func:`use_tracer_provider`, if any."""

    override: Any = None


provider: Final = _Provider()


def use_tracer_provider(tracer_provider: Any) -> None:
    """Trace userstore's calls with ``tracer_provider`` instead of OpenTelemetry's global one.

    For an app (or a test) that keeps several providers, or cannot set the
    process-wide one. Without it, userstore uses the global provider that the
    app set with ``opentelemetry.trace.set_tracer_provider``.

    Args:
        tracer_provider: An ``opentelemetry.trace.TracerProvider`` (the SDK's,
            say), or ``None`` to go back to the global provider.

    Raises:
        ConfigurationError: ``tracer_provider`` is neither ``None`` nor an
            object with a callable ``get_tracer``, or OpenTelemetry's API is
            not installed (``pip install 'userstore[opentelemetry]'``); the
            provider in use is unchanged.
    """
    if tracer_provider is not None:
        if not callable(getattr(tracer_provider, "get_tracer", None)):
            raise ConfigurationError(
                "use_tracer_provider takes an OpenTelemetry TracerProvider (an object with "
                f"get_tracer) or None, got {type(tracer_provider).__name__}"
            )
        try:
            import opentelemetry.trace  # noqa: F401  (userstore's spans need the API)
        except ImportError as exc:
            raise ConfigurationError(
                "tracing needs OpenTelemetry's API: pip install 'userstore[opentelemetry]'"
            ) from exc
    provider.override = tracer_provider


def tracing_active() -> bool:
    """Whether a call should start a span: cheap enough to ask on every call."""
    if provider.override is not None:
        return True
    trace = sys.modules.get("opentelemetry.trace")
    # Set by opentelemetry.trace.set_tracer_provider (and only by it): None
    # while the API's do-nothing proxy stands in for a provider.
    return trace is not None and getattr(trace, "_TRACER_PROVIDER", None) is not None
