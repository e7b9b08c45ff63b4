"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import socket
from collections.abc import Callable

import aiohttp

from bot.config.settings import Settings
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, Clock
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, click_on_card, install_activity


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return answer.status, await answer.text(), answer.headers.get("Content-Type", "")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _sample(text: str, series: str) -> float:
    """The value of one series (``name{labels}`` exactly as exposed) in an exposition."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exposed")


async def test_ready_only_once_the_channel_is_known(bot: BotHarness, connector: RecordingConnector) -> None:
    assert (await _get(f"{bot.url}/healthz"))[0] == 200
    status, body, _ = await _get(f"{bot.url}/readyz")
    assert status == 503 and "not been installed" in body
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    status, body, _ = await _get(f"{bot.url}/readyz")
    assert status == 200 and '"ready"' in body


async def test_metrics_are_not_on_the_public_port_by_default(bot: BotHarness) -> None:
    status, _, _ = await _get(f"{bot.url}/metrics")
    assert status == 404


async def test_metrics_count_and_time_what_happened(
    make_settings: Callable[..., Settings], clock: Clock, tenant: SandboxTenant, connector: RecordingConnector
) -> None:
    bot = BotHarness(make_settings(metrics_on_main_port=True), clock)
    await bot.start()
    try:
        await bot.post(install_activity(connector.service_url))
        await bot.service.drain()
        await bot.poller.poll_once()
        await bot.service.drain()
        await click_on_card(
            bot,
            connector,
            "Adele Vance",
            "disableAccount",
            user=RESPONDER,
            reason="Pass-the-ticket from FIN-SRV-07",
        )
        await bot.service.drain()
        status, text, content_type = await _get(f"{bot.url}/metrics")
    finally:
        await bot.stop()

    assert status == 200 and content_type.startswith("text/plain")
    assert "# TYPE remediation_cards_posted_total counter" in text
    assert _sample(text, "remediation_cards_posted_total") == 3
    assert _sample(text, 'remediation_alerts_ingested_total{source="microsoftDefenderForIdentity"}') == 1
    assert _sample(text, 'remediation_actions_total{action="disableAccount",outcome="succeeded"}') == 1
    # Histograms: the click, every Graph call by operation and status, the action end to end.
    assert "# TYPE remediation_invoke_duration_seconds histogram" in text
    assert (
        _sample(text, 'remediation_invoke_duration_seconds_count{outcome="answered",verb="disableAccount"}')
        == 1
    )
    assert (
        _sample(
            text,
            "remediation_graph_request_duration_seconds_count"
            '{operation="PATCH /users/{user-id}",status="204"}',
        )
        == 1
    )
    assert (
        _sample(
            text,
            "remediation_graph_request_duration_seconds_count"
            '{operation="GET /security/alerts_v2",status="200"}',
        )
        >= 1
    )
    assert (
        _sample(
            text, 'remediation_action_duration_seconds_count{action="disableAccount",outcome="succeeded"}'
        )
        == 1
    )
    assert _sample(text, "remediation_teams_pacing_wait_seconds_count") >= 4  # 3 posts, an update, a reply
    # Gauges read at scrape time: nothing left queued, and the poll is a few minutes behind at most.
    assert _sample(text, "remediation_jobs_pending") == 0
    assert 0 <= _sample(text, "remediation_poll_lag_seconds") < 3600
    # No id or name is ever a label value.
    assert "6b1d2f3a" not in text and "Adele" not in text


async def test_metrics_on_a_port_of_their_own(
    make_settings: Callable[..., Settings], clock: Clock, connector: RecordingConnector
) -> None:
    port = _free_port()
    bot = BotHarness(make_settings(metrics_port=port), clock)
    await bot.start()
    try:
        await bot.post(install_activity(connector.service_url))
        await bot.service.drain()
        await bot.poller.poll_once()
        await bot.service.drain()
        own_status, text, _ = await _get(f"http://127.0.0.1:{port}/metrics")
        public_status, _, _ = await _get(f"{bot.url}/metrics")
        other_status, _, _ = await _get(f"http://127.0.0.1:{port}/api/messages")
    finally:
        await bot.stop()

    assert own_status == 200 and _sample(text, "remediation_cards_posted_total") == 3
    assert public_status == 404 and other_status == 404
