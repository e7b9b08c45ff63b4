"""Runs the real bot app on loopback and speaks Bot Framework to it like Teams does."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from bot.config.settings import Settings
from bot.domain.models import Case
from bot.services import RemediationService
from bot.tenant.intake import AlertPoller
from bot.web.app import POLLER, SERVICE, STORE, create_app
from devtools.sandbox import DEMO_TENANT_ID
from tests.support.connector import RecordingConnector

CHANNEL_ID = "19:incident-response@thread.tacv2"
TEAM_ID = "19:incident-response@thread.tacv2"
# The sandbox tenant's id: the bot accepts activities from its configured tenant only.
TENANT_ID = DEMO_TENANT_ID
BOT_ID = "28:remediation-bot"

_ids = itertools.count(1)


class BotHarness:
    """The aiohttp app from :func:`bot.web.app.create_app`, served over real HTTP on 127.0.0.1."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        port: int = 0,
    ) -> None:
        """``monotonic`` and ``sleep`` time the service's card coalescing (real unless a test moves them).
        ``port`` 0 picks a free one; the approval page's tests give the one APPROVAL_PAGE_URL names."""
        self.settings = settings
        self._port = port
        self.clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> None:
        """Build and serve the app (polling is driven by the test)."""
        self.app = create_app(
            self.settings, clock=self.clock, poll=False, monotonic=self._monotonic, sleep=self._sleep
        )
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Let background work finish, then shut down like a real process would."""
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def service(self) -> RemediationService:
        """The running service (to wait for background work)."""
        return self.app[SERVICE]

    async def case_of(self, upn: str) -> Case:
        """The open case of an identity (tests forge clicks with its real id and revision)."""
        for case in await self.app[STORE].list_cases():
            if (case.identity.upn or "").lower() == upn.lower() and not case.merged_into:
                return case
        raise AssertionError(f"no case for {upn}")

    @property
    def poller(self) -> AlertPoller:
        """The alert poller; tests call ``poll_once`` instead of waiting for the interval."""
        return self.app[POLLER]

    async def post(
        self, activity: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST one activity to ``/api/messages``; return status and parsed JSON (or text)."""
        assert self._http is not None
        async with self._http.post(
            f"{self.url}/api/messages", json=activity, headers=headers or {}
        ) as response:
            body: Any = await response.text()
            if response.content_type == "application/json":
                body = await response.json()
            return response.status, body

    async def post_raw(
        self, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST arbitrary bytes to ``/api/messages``."""
        assert self._http is not None
        async with self._http.post(
            f"{self.url}/api/messages", data=data, headers={"Content-Type": content_type, **(headers or {})}
        ) as response:
            body: Any = await response.text()
            if response.content_type == "application/json":
                body = await response.json()
            return response.status, body


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a URL the settings must name before start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def install_activity(service_url: str, *, channel_id: str = CHANNEL_ID) -> dict[str, Any]:
    """What Teams sends when the bot is added to a team (conversationUpdate, teamMemberAdded)."""
    return {
        "type": "conversationUpdate",
        "id": f"install-{next(_ids)}",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": "29:admin", "aadObjectId": "admin-object-id", "name": "Security Admin"},
        "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
        "conversation": {
            "id": channel_id,
            "isGroup": True,
            "conversationType": "channel",
            "tenantId": TENANT_ID,
        },
        "membersAdded": [{"id": BOT_ID}],
        "channelData": {
            "eventType": "teamMemberAdded",
            "team": {"id": TEAM_ID, "name": "Incident Response"},
            "channel": {"id": channel_id},
            "tenant": {"id": TENANT_ID},
        },
    }


def invoke_activity(
    service_url: str,
    conversation_id: str,
    *,
    user_object_id: str,
    user_name: str,
    verb: str,
    data: dict[str, Any],
    reply_to: str | None = None,
) -> dict[str, Any]:
    """An ``adaptiveCard/action`` invoke: someone clicked an Action.Execute button."""
    activity: dict[str, Any] = {
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": f"invoke-{next(_ids)}",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": f"29:{user_object_id}", "aadObjectId": user_object_id, "name": user_name},
        "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
        "conversation": {
            "id": conversation_id,
            "isGroup": True,
            "conversationType": "channel",
            "tenantId": TENANT_ID,
        },
        "channelData": {
            "team": {"id": TEAM_ID},
            "channel": {"id": conversation_id.partition(";")[0]},
            "tenant": {"id": TENANT_ID},
        },
        "value": {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"},
    }
    if reply_to:
        activity["replyToId"] = reply_to
    return activity


def card_action(card: dict[str, Any], verb: str) -> dict[str, Any]:
    """The Action.Execute with ``verb`` on a card (searching nested action sets too)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute" and node.get("verb") == verb:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    assert found, f"no Action.Execute with verb {verb!r} on the card"
    return found[0]


async def click_on_card(
    bot: BotHarness,
    connector: RecordingConnector,
    name: str,
    verb: str,
    *,
    user: Mapping[str, str],
    reason: str,
) -> dict[str, Any]:
    """``user`` (``id``, ``name``) clicks ``verb`` on the card posted for ``name``, with ``reason``;
    returns the activity sent (its ``id`` is what the bot's lines bind as ``activity_id``)."""
    post = next(p for p in connector.of_kind("create") if name in p.text)
    assert post.card is not None
    activity = invoke_activity(
        connector.service_url,
        post.conversation_id,
        user_object_id=user["id"],
        user_name=user["name"],
        verb=verb,
        data={**card_action(post.card, verb)["data"], "reason": reason},
    )
    await bot.post(activity)
    return activity
