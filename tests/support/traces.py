"""Finished spans, kept in memory while a test asks for them (the bot's real tracing path)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bot import tracing


class _WhileRecording(SpanProcessor):
    """Exports to memory only while a test records: the process-wide provider outlives tests."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self._inner = SimpleSpanProcessor(self.exporter)
        self.recording = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.recording:
            self._inner.on_end(span)


_processor: _WhileRecording | None = None


@pytest.fixture
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """The spans that end while the test runs."""
    global _processor
    if _processor is None:
        _processor = _WhileRecording()
        tracing.install(_processor)
    _processor.exporter.clear()
    _processor.recording = True
    try:
        yield _processor.exporter
    finally:
        _processor.recording = False
        _processor.exporter.clear()
