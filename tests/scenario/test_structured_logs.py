"""LOG_FORMAT=json: every line of a turn, a job and a poll carries the ids it concerns, bound once.

The bot's real log handler (bot/cli/logs.py) renders what the scenario logs; each line must parse
as JSON, and the lines about the click, the execution and the poll carry their ids as fields.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bot.cli.logs import formatter
from devtools.sandbox import SandboxTenant
from tests.conftest import OUTSIDER, RESPONDER
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, click_on_card, install_activity

ADELE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the bot's JSON log handler writes while the test runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    root, httpx = logging.getLogger(), logging.getLogger("httpx")
    levels = root.level, httpx.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    httpx.setLevel(logging.INFO)  # its request lines show what a poll logs
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        httpx.setLevel(levels[1])


async def test_click_job_and_poll_lines_carry_their_ids(
    bot: BotHarness, tenant: SandboxTenant, connector: RecordingConnector, log_output: io.StringIO
) -> None:
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    await bot.poller.poll_once()
    await bot.service.drain()
    refused = await click_on_card(
        bot, connector, "Adele Vance", "disableAccount", user=OUTSIDER, reason="I think so"
    )
    await click_on_card(
        bot,
        connector,
        "Adele Vance",
        "disableAccount",
        user=RESPONDER,
        reason="Pass-the-ticket from FIN-SRV-07",
    )
    await bot.service.drain()
    assert tenant.user(ADELE)["accountEnabled"] is False
    await bot.poller.poll_once()
    lines: list[dict[str, Any]] = [json.loads(line) for line in log_output.getvalue().splitlines()]

    refusal = [line for line in lines if "refused" in line["event"]]
    assert refusal, lines
    assert refusal[0]["activity_id"] == refused["id"]
    assert refusal[0]["case_id"] and refusal[0]["case_id"] in refusal[0]["event"]
    assert refusal[0]["level"] == "info" and refusal[0]["logger"] == "bot.services.clicks"

    finished = [
        line for line in lines if line["event"].startswith("request ") and "succeeded" in line["event"]
    ]
    assert finished, lines
    done = finished[0]
    assert done["request_id"] in done["event"]
    assert done["case_id"] == refusal[0]["case_id"]
    assert done["job"]
    assert done["graph_request_id"]
    # The job's ids end with the job: the lines of the poll after it (here httpx's, logged inside
    # the poll) carry the poll's id and none of the job's.
    polled = [line for line in lines if "alerts_v2?" in line["event"] and line["logger"] == "httpx"]
    last_poll = polled[-1]
    assert last_poll["poll"] and last_poll["poll"] != polled[0]["poll"]
    assert not {"case_id", "request_id", "job", "activity_id"} & set(last_poll)
    assert all("timestamp" in line for line in lines)
