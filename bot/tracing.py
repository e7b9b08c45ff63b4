"""Traces with OpenTelemetry: one trace from a card click to the thread reply.

A click's turn opens the trace; the use case, each Graph call and each Bot Connector call are
spans in it. The action itself runs later in a leased job (perhaps on another replica), so the
job carries the click's ``traceparent`` (W3C Trace Context) in its payload and continues the same
trace: the Graph writes, the read-back and the reply in the thread join the click's trace.

Export is off unless configured: :func:`configure` installs an OTLP/HTTP exporter when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, with the
standard ``OTEL_*`` variables; without it the spans cost next to nothing and go nowhere. This is
the only module that imports OpenTelemetry.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Status, StatusCode

P = ParamSpec("P")
R = TypeVar("R")

SERVICE_NAME = "remediation-bot"
TRACEPARENT = "traceparent"

_tracer = trace.get_tracer("remediation-bot")


def configure(environ: Mapping[str, str] = os.environ) -> bool:
    """Export spans over OTLP/HTTP when an OTLP endpoint is configured; ``True`` if it is."""
    if not (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    install(BatchSpanProcessor(OTLPSpanExporter()))
    return True


def install(processor: SpanProcessor) -> None:
    """Send finished spans to ``processor`` (an exporter's, or a test's in-memory one)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(processor)


def flush(timeout: float = 1.0) -> None:
    """Export the spans still queued, waiting at most ``timeout`` seconds (before a process
    leaves without running exit handlers)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(int(timeout * 1000))


@contextmanager
def span(name: str, **attributes: str | int | bool) -> Iterator[Span]:
    """A span named ``name`` around the block; an exception marks it failed and propagates."""
    with _tracer.start_as_current_span(name, attributes=attributes, record_exception=True) as current:
        yield current


def traced(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run the decorated coroutine function in a span called ``name``."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(function)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(name):
                return await function(*args, **kwargs)

        return run

    return decorate


def continuing(
    name: str, parent_of: Callable[..., Any]
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run the decorated coroutine function in a span ``name`` continuing the trace whose
    ``traceparent`` ``parent_of`` (given the call's arguments) returns; a new trace without one."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(function)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with continued(parent_of(*args, **kwargs)), span(name):
                return await function(*args, **kwargs)

        return run

    return decorate


def annotate(**attributes: object) -> None:
    """Add attributes to the current span (what became known inside it); empty ones are skipped."""
    current = trace.get_current_span()
    for key, value in attributes.items():
        if value in (None, ""):
            continue
        current.set_attribute(key, value if isinstance(value, str | int | float | bool) else str(value))


def failed(description: str) -> None:
    """Mark the current span failed without an exception (e.g. an error status answered)."""
    trace.get_current_span().set_status(Status(StatusCode.ERROR, description))


def traceparent() -> str | None:
    """The current span's W3C ``traceparent``, to hand to work that continues it later."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def continued(parent: Any) -> Iterator[None]:
    """Make ``parent`` (a ``traceparent`` string, or anything else: ignored) the current context."""
    if not isinstance(parent, str) or len(parent) > 128:
        yield
        return
    token = context.attach(propagate.extract({TRACEPARENT: parent}))
    try:
        yield
    finally:
        context.detach(token)


def trace_id() -> str | None:
    """The current trace id as 32 hex digits, for log lines; ``None`` outside any trace."""
    current = trace.get_current_span().get_span_context()
    return format(current.trace_id, "032x") if current.is_valid else None
