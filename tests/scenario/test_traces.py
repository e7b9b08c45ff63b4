"""One trace from the click through the use case, every Graph call and Bot Connector call, to the
thread reply, although the action runs later in a leased job (it continues the click's trace)."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bot.cli.logs import formatter
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, click_on_card, install_activity
from tests.support.traces import recorded_spans

__all__ = ["recorded_spans"]  # the fixture

ADELE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"


async def test_one_trace_spans_click_graph_and_reply(
    bot: BotHarness,
    tenant: SandboxTenant,
    connector: RecordingConnector,
    recorded_spans: InMemorySpanExporter,
) -> None:
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    await bot.poller.poll_once()
    await bot.service.drain()
    recorded_spans.clear()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    logger = logging.getLogger("bot")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await click_on_card(
            bot,
            connector,
            "Adele Vance",
            "disableAccount",
            user=RESPONDER,
            reason="Pass-the-ticket from FIN-SRV-07",
        )
        await bot.service.drain()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert tenant.user(ADELE)["accountEnabled"] is False

    spans = recorded_spans.get_finished_spans()
    click = next(s for s in spans if s.name == "teams activity")
    trace_id = click.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    names = [s.name for s in in_trace]
    assert "card click" in names
    assert "execute action" in names
    assert "graph PATCH /users/{user-id}" in names
    assert "graph GET /users/{user-id}" in names  # the read-back
    assert "teams reply in the thread" in names
    assert "teams update the card" in names
    patch = next(s for s in in_trace if s.name == "graph PATCH /users/{user-id}")
    assert patch.attributes is not None and patch.attributes["http.response.status_code"] == 204
    assert patch.attributes["graph.request_id"]
    # The job's span is a child of the click's trace, not the root of a new one.
    job = next(s for s in in_trace if s.name == "execute action")
    assert job.parent is not None and job.parent.trace_id == trace_id
    # Log lines of the job carry the same trace id.
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    succeeded = [line for line in lines if "succeeded" in line["event"]]
    assert succeeded and succeeded[0]["trace_id"] == format(trace_id, "032x")


async def test_a_forged_traceparent_in_a_job_starts_a_new_trace(
    bot: BotHarness, recorded_spans: InMemorySpanExporter
) -> None:
    store = bot.service.execution._store  # the job queue the clicks use
    await store.enqueue_job("execute", "forged:1", {"requestId": "none", "traceparent": "00-zz\\n" * 40})
    await bot.service.run_jobs()

    job = next(s for s in recorded_spans.get_finished_spans() if s.name == "execute action")
    assert job.parent is None
