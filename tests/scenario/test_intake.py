"""Alert intake: the signed push endpoint, paging and watermarks, one living card per identity."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from bot.config.settings import Settings
from bot.web.push import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from devtools.sandbox import SandboxTenant
from tests.conftest import Clock
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, install_activity
from tests.support.timing import VirtualTime

SECRET = "s3cr3t-for-the-push-endpoint-0123456789"
LEE_UPN = "lee.gu@contoso.com"


@pytest.fixture
async def pushing_bot(
    make_settings: Callable[..., Settings], clock: Clock, connector: RecordingConnector
) -> AsyncIterator[BotHarness]:
    async with _pushing_bot(make_settings, clock, connector) as harness:
        yield harness


@pytest.fixture
def coalescing_time() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
async def pushing_bot_on_virtual_time(
    make_settings: Callable[..., Settings],
    clock: Clock,
    connector: RecordingConnector,
    coalescing_time: VirtualTime,
) -> AsyncIterator[BotHarness]:
    """The pushing bot with its card coalescing timed by ``coalescing_time``."""
    async with _pushing_bot(
        make_settings, clock, connector, monotonic=coalescing_time.monotonic, sleep=coalescing_time.sleep
    ) as harness:
        yield harness


@asynccontextmanager
async def _pushing_bot(
    make_settings: Callable[..., Settings], clock: Clock, connector: RecordingConnector, **timing: Any
) -> AsyncIterator[BotHarness]:
    harness = BotHarness(
        make_settings(push_shared_secret=SECRET, card_update_coalesce_seconds=0.5), clock, **timing
    )
    await harness.start()
    await harness.post(install_activity(connector.service_url))
    await harness.service.drain()
    yield harness
    await harness.stop()


async def push(
    bot: BotHarness,
    payload: Any,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    body = raw if raw is not None else json.dumps(payload).encode()
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {
        "Content-Type": content_type,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: signature if signature is not None else sign(secret, stamp, body),
    }
    # A BytesIO body: aiohttp warns that large raw bytes would block the event loop.
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{bot.url}/api/alerts", data=io.BytesIO(body), headers=headers) as response,
    ):
        return response.status, await response.json()


def minimal(
    alert_id: str, *, upn: str = LEE_UPN, severity: str = "high", title: str = "Impossible travel"
) -> dict[str, Any]:
    return {
        "id": alert_id,
        "title": title,
        "severity": severity,
        "source": "sentinel",
        "user": {"userPrincipalName": upn},
    }


async def test_a_signed_push_opens_a_case_once(
    pushing_bot: BotHarness, connector: RecordingConnector
) -> None:
    # One reading of the clock: read twice, the retry's "a second earlier" could land on the
    # first push's second (same timestamp, same signature: a replay) when the clock ticks between.
    sent_at = int(time.time())
    status, body = await push(pushing_bot, minimal("sentinel-1"), timestamp=sent_at)
    assert (status, body) == (202, {"accepted": 1, "newOrChanged": 1})
    # The sender retries (a fresh timestamp, so a fresh signature).
    status, body = await push(pushing_bot, minimal("sentinel-1"), timestamp=sent_at - 1)
    assert (status, body) == (202, {"accepted": 1, "newOrChanged": 0}), "idempotent by alert id"
    await pushing_bot.service.drain()
    posts = connector.of_kind("create")
    assert len(posts) == 1 and "Impossible travel" in posts[0].text and "Lee Gu" in posts[0].text


async def test_a_graph_alert_and_a_batch_are_accepted(pushing_bot: BotHarness, tenant: SandboxTenant) -> None:
    graph_alerts = [a for a in tenant.alerts() if "Leaked" in a["title"]]
    status, body = await push(pushing_bot, {"value": [*graph_alerts, minimal("sentinel-2")]})
    assert status == 202 and body["accepted"] == 2


async def test_bad_items_reject_the_whole_request_with_field_errors(
    pushing_bot: BotHarness, connector: RecordingConnector
) -> None:
    bad = [minimal("ok-1"), {"title": "no id", "severity": "urgent", "user": {}}]
    status, body = await push(pushing_bot, bad)
    assert status == 400
    fields = {d["field"] for d in body["error"]["details"]}
    assert fields == {"[1].id", "[1].severity", "[1].user"}
    await pushing_bot.service.drain()
    assert connector.of_kind("create") == [], "nothing is half-stored"
    status, _ = await push(pushing_bot, minimal("ok-1"))
    assert status == 202


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"signature": ""}, 401, "Sign the request"),
        ({"signature": "sha256=" + "0" * 64}, 401, "does not match"),
        ({"secret": "another-secret-that-is-long-enough-000000"}, 401, "does not match"),
        ({"timestamp": int(time.time()) - 3600}, 401, "outside the 300 s window"),
        ({"content_type": "text/plain"}, 415, "application/json"),
        ({"raw": b"{" + b" " * (1024 * 1024 + 10) + b"}"}, 413, "bytes per request"),
        ({"raw": b"{not json"}, 400, "not valid JSON"),
    ],
)
async def test_every_refusal_is_precise(
    pushing_bot: BotHarness, kwargs: dict[str, Any], status: int, words: str
) -> None:
    got, body = await push(pushing_bot, minimal("x-1"), **kwargs)
    assert got == status
    assert words in body["error"]["message"]


async def test_a_replayed_signature_is_refused(pushing_bot: BotHarness) -> None:
    body = json.dumps(minimal("replay-1")).encode()
    stamp = int(time.time())
    signature = sign(SECRET, str(stamp), body)
    first, _ = await push(pushing_bot, None, raw=body, timestamp=stamp, signature=signature)
    second, answer = await push(pushing_bot, None, raw=body, timestamp=stamp, signature=signature)
    assert (first, second) == (202, 401)
    assert "replay" in answer["error"]["message"]


async def test_push_is_off_without_a_secret(bot: BotHarness) -> None:
    status, body = await push(bot, minimal("x-2"))
    assert status == 404 and "PUSH_SHARED_SECRET" in body["error"]["message"]


async def test_concurrent_pushes_of_one_alert_make_one_case(
    pushing_bot: BotHarness, connector: RecordingConnector
) -> None:
    now = int(time.time())
    answers = await asyncio.gather(
        *(push(pushing_bot, minimal("race-1"), timestamp=now - i) for i in range(20))
    )
    assert all(status == 202 for status, _ in answers)
    assert sum(body["newOrChanged"] for _, body in answers) == 1
    await pushing_bot.service.drain()
    assert len(connector.of_kind("create")) == 1


async def test_a_storm_on_one_identity_is_one_post_and_few_updates(
    pushing_bot_on_virtual_time: BotHarness, connector: RecordingConnector, coalescing_time: VirtualTime
) -> None:
    pushing_bot = pushing_bot_on_virtual_time
    # The storm lasts the same half second of coalescing time however slow the machine is.
    coalescing_time.hold()
    for batch in range(10):
        alerts = [
            minimal(f"storm-{batch}-{i}", severity="medium", title=f"Alert {batch}-{i}") for i in range(10)
        ]
        status, _ = await push(pushing_bot, alerts)
        assert status == 202
        coalescing_time.advance(0.05)
    coalescing_time.run()
    await pushing_bot.service.drain()
    assert len(connector.of_kind("create")) == 1
    updates = connector.of_kind("update")
    assert len(updates) <= 4, f"coalesced: {len(updates)} updates for 100 alerts"
    latest = (updates or connector.of_kind("create"))[-1]
    assert "Why: 100 alerts" in latest.text, "the card ends up showing every alert"


async def test_escalation_gets_a_thread_note(pushing_bot: BotHarness, connector: RecordingConnector) -> None:
    await push(pushing_bot, minimal("esc-1", severity="medium", title="Atypical travel"))
    await pushing_bot.service.drain()
    await push(pushing_bot, minimal("esc-2", severity="medium", title="Atypical travel again"))
    await push(pushing_bot, minimal("esc-3", severity="high", title="Token theft"))
    await pushing_bot.service.drain()
    root = connector.of_kind("create")[0].activity_id
    notes = [c.text for c in connector.in_thread(root)]
    assert notes == [
        "**Escalated to high**: Token theft (Pushed by automation, " + notes[0].split(", ", 1)[1]
    ]


async def test_paging_restarts_and_late_alerts_lose_nothing(
    make_settings: Callable[..., Settings], clock: Clock, tenant: SandboxTenant, connector: RecordingConnector
) -> None:
    for i in range(130):
        tenant.add_alert(
            {
                "user": "adele.vance@contoso.com",
                "serviceSource": "microsoftDefenderForIdentity",
                "title": f"Burst {i}",
                "severity": "low",
            }
        )
    first = BotHarness(make_settings(), clock)
    await first.start()
    try:
        await first.post(install_activity(connector.service_url))
        await first.service.drain()
        assert await first.poller.poll_once() == 133, "130 new alerts over several pages, plus the 3 seeded"
        await first.service.drain()
    finally:
        await first.stop()
    # An alert that becomes visible late, stamped two minutes before the newest one seen.
    clock.now -= timedelta(minutes=2)
    tenant.add_alert(
        {
            "user": "lee.gu@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "Late",
            "severity": "high",
        }
    )
    clock.now += timedelta(minutes=2)
    second = BotHarness(make_settings(), clock)
    await second.start()
    try:
        assert await second.poller.poll_once() == 1, "after a restart: only the late alert is new"
        assert await second.poller.poll_once() == 0, "the overlap re-reads but changes nothing"
        await second.service.drain()
        adele = await second.case_of("adele.vance@contoso.com")
        assert len(adele.alerts) == 131, "every alert of the burst joined her one case, none twice"
        assert len({a.id for a in adele.alerts}) == 131
    finally:
        await second.stop()
    assert len(connector.of_kind("create")) == 3, "no case and no card twice"
