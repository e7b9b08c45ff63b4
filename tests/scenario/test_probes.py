"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import aiohttp

from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, install_activity


async def _get(bot: BotHarness, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{bot.url}{path}") as answer:
        return answer.status, await answer.text()


async def test_ready_only_once_the_channel_is_known(bot: BotHarness, connector: RecordingConnector) -> None:
    assert (await _get(bot, "/healthz"))[0] == 200
    status, body = await _get(bot, "/readyz")
    assert status == 503 and "not been installed" in body
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    status, body = await _get(bot, "/readyz")
    assert status == 200 and '"ready"' in body


async def test_metrics_count_what_happened(bot: BotHarness, connector: RecordingConnector) -> None:
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    await bot.poller.poll_once()
    await bot.service.drain()
    status, text = await _get(bot, "/metrics")
    assert status == 200
    assert "# TYPE remediation_cards_posted_total counter" in text
    assert "remediation_cards_posted_total 3" in text
    assert 'remediation_alerts_ingested_total{source="microsoftDefenderForIdentity"} 1' in text
    assert "remediation_actions_total 0" in text
