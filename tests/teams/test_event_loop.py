"""Nothing blocks the event loop: not even a slow Entra ID while the bot posts its cards.

The real bot process (``remediation-bot serve`` with Bot Framework authentication ON, as
tests/bench/secured.py runs it: botbuilder's outbound token comes from the sandbox tenant over
TLS), with asyncio's debug mode on (``PYTHONASYNCIODEBUG=1``: every callback that holds the loop
longer than ``slow_callback_duration``, 0.1 s, is logged as "Executing ... took N seconds"). The
sandbox tenant answers every token request :data:`TOKEN_DELAY` seconds late, so a token fetched on
the loop shows as a callback that took that long (see :data:`BLOCKED`). The bot posts one card
per identity and replies in a thread to a request click: each of those sends needs the token.
On both Teams transports (``TEAMS_SDK``): the Agents SDK fetches its token and the signing keys
in worker threads of its own.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from devtools.sandbox import SandboxTenant
from tests.bench.common import (
    Auth,
    Client,
    Process,
    action_data,
    bot_env,
    click_activity,
    install_activity,
    start_bot,
)
from tests.support.botauth import ChannelKeys
from tests.support.connector import RecordingConnector
from tests.support.replica import free_port

RESPONDER = {"id": "aaaaaaaa-0000-4000-8000-000000000001", "name": "Alex Wilber"}
USERS = [
    {
        "id": f"7e000000-0000-4000-8000-{i:012d}",
        "userPrincipalName": f"loop{i}@contoso.com",
        "displayName": f"Loop User {i}",
    }
    for i in range(3)
]
# Entra ID on a bad day; far above the debug mode's 0.1 s, far below any timeout.
TOKEN_DELAY = 1.0
# A callback that held the loop this long waited on I/O: on a busy machine (two cores shared by
# the whole test suite) a callback doing a few milliseconds of work can take over 0.1 s of wall
# time, but not most of a second. Every slow callback is listed when the test fails.
BLOCKED = 0.8 * TOKEN_DELAY
SLOW_CALLBACK = re.compile(r"Executing (.+?) took ([0-9.]+) seconds")


def _scenario() -> dict[str, object]:
    alerts = [
        {
            "user": u["userPrincipalName"],
            "serviceSource": "azureAdIdentityProtection",
            "title": f"Leaked credentials of {u['displayName']}",
            "severity": "high",
            "minutes_ago": 10 - n,
        }
        for n, u in enumerate(USERS)
    ]
    return {"users": USERS, "alerts": alerts}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[SandboxTenant, RecordingConnector, Auth]]:
    tenant = SandboxTenant(_scenario(), cert_dir=tmp_path / "tenant")
    await tenant.start()
    connector = RecordingConnector()
    await connector.start()
    keys = ChannelKeys()
    keys.start()
    yield tenant, connector, Auth(keys, tenant)
    keys.stop()
    await connector.stop()
    await tenant.stop()


async def _until(check: object, limit: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {limit:.0f} s")


async def test_bot_connector_sends_never_block_the_event_loop(
    world: tuple[SandboxTenant, RecordingConnector, Auth], tmp_path: Path, teams_sdk: str
) -> None:
    tenant, connector, auth = world
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "responders": {"users": [RESPONDER["id"]]},
                "approvers": {"users": [RESPONDER["id"]]},
                "approvals": {"disableAccount": 2},
                "privileged_targets": {"roles": []},
            }
        )
    )
    env = bot_env(
        tenant,
        auth,
        store_url=f"sqlite:///{tmp_path / 'bot.db'}",
        policy=policy,
        port=free_port(),
        PYTHONASYNCIODEBUG="1",
        TEAMS_SDK=teams_sdk,
        POLL_INTERVAL_SECONDS="1",
        JOB_POLL_SECONDS="0.3",
        CARD_UPDATE_COALESCE_SECONDS="0.2",
    )
    # Every token request from now on, the bot's Graph token and its Bot Connector token alike.
    tenant.inject_fault("POST", r"/oauth2/v2\.0/token$", status=None, delay=TOKEN_DELAY, times=10_000)
    bot: Process = start_bot(env, tmp_path / "bot.log")
    client = Client()
    try:
        await bot.wait_healthy()
        headers = auth.header(connector.service_url)
        install = await client.post(
            bot.url, install_activity(connector.service_url, tenant.tenant_id), headers
        )
        assert install.status in (200, 201), install.body
        await _until(lambda: len(connector.of_kind("create")) >= len(USERS), 60, "a card per identity")
        post = connector.of_kind("create")[0]
        found = action_data(post.card, ["disableAccount"])
        assert found is not None, "the card offers to disable the account"
        verb, data = found
        click = click_activity(
            connector.service_url,
            tenant.tenant_id,
            post.activity_id,
            RESPONDER,
            verb,
            {**data, "reason": "loop"},
        )
        answer = await client.post(bot.url, click, headers)
        assert answer.status == 200, answer.body
        # Asking for a second approval mentions the approvers in the card's thread.
        await _until(lambda: connector.in_thread(post.activity_id), 30, "the request's thread reply")
    finally:
        await client.close()
        bot.stop()

    log = bot.log_path.read_text(errors="replace")
    assert tenant.violations == [], tenant.violations
    token_requests = [r for r in tenant.requests if r.path.endswith("/oauth2/v2.0/token")]
    assert len(token_requests) >= 2, "both the Graph and the Bot Connector tokens came from the tenant"
    slow = [(what[:160], float(seconds)) for what, seconds in SLOW_CALLBACK.findall(log)]
    blocked = [(what, seconds) for what, seconds in slow if seconds >= BLOCKED]
    listing = "\n".join(f"{what}: {seconds} s" for what, seconds in slow)
    assert blocked == [], f"callbacks blocked the event loop (every slow one listed):\n{listing}"
