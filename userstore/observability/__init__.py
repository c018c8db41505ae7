"""Logs and traces of what userstore does: the ``userstore`` logger and OpenTelemetry spans.

Every repository call (sync, async and the in-memory fake) is one DEBUG
record on the ``userstore`` logger, a WARNING instead when it took longer
than :func:`set_slow_call_threshold`, and, with OpenTelemetry's API installed
(``pip install 'userstore[opentelemetry]'``) and a tracer provider set, one
span named ``userstore.<operation>``. The unit-of-work runners log each retry.
Nothing of this costs more than a few flag checks per call while nobody
listens, and OpenTelemetry is never imported by userstore until the app has
set a tracer provider. See README.md, "Observability".
"""

from userstore.observability.logs import (
    LOGGER_NAME,
    logger,
    set_slow_call_threshold,
    slow_call_threshold,
)
from userstore.observability.tracing import use_tracer_provider

__all__ = [
    "LOGGER_NAME",
    "logger",
    "set_slow_call_threshold",
    "slow_call_threshold",
    "use_tracer_provider",
]
