"""A recording Bot Connector on loopback: the Teams side of the bot's outbound calls.

It answers the Bot Connector REST calls botbuilder makes (create conversation, send, reply,
update) the way Teams does for channel posts, and records each call so tests can assert what a
channel would have shown.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class ConnectorCall:
    """One call the bot made: ``kind`` is create, send or update."""

    kind: str
    conversation_id: str
    activity_id: str
    body: dict[str, Any]

    @property
    def text(self) -> str:
        """The activity's text, or the card's text blocks joined (for assertions)."""
        activity = self.body.get("activity", self.body) if self.kind == "create" else self.body
        parts = [activity.get("text") or ""]
        for attachment in activity.get("attachments") or []:
            parts.append(_card_text(attachment.get("content") or {}))
        return "\n".join(p for p in parts if p)

    @property
    def card(self) -> dict[str, Any] | None:
        """The Adaptive Card the call carried, if any."""
        activity = self.body.get("activity", self.body) if self.kind == "create" else self.body
        for attachment in activity.get("attachments") or []:
            if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
                content: dict[str, Any] = attachment["content"]
                return content
        return None


def _card_text(node: Any) -> str:
    if isinstance(node, dict):
        own = [str(node[k]) for k in ("text", "title", "value") if isinstance(node.get(k), str)]
        return "\n".join(own + [_card_text(v) for v in node.values() if isinstance(v, list | dict)])
    if isinstance(node, list):
        return "\n".join(_card_text(v) for v in node)
    return ""


@dataclass
class RecordingConnector:
    """Start with :meth:`start`; ``service_url`` goes into the activities the test sends."""

    calls: list[ConnectorCall] = field(default_factory=list)
    _server: TestServer | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1000))

    async def start(self) -> None:
        """Serve on a free loopback port."""
        app = web.Application()
        app.router.add_post("/v3/conversations", self._create)
        app.router.add_post("/v3/conversations/{cid}/activities", self._send)
        app.router.add_post("/v3/conversations/{cid}/activities/{aid}", self._send)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self._update)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            await self._server.close()

    @property
    def service_url(self) -> str:
        """The URL the bot should send to."""
        assert self._server is not None
        return str(self._server.make_url("/"))

    def of_kind(self, kind: str) -> list[ConnectorCall]:
        """Calls of one kind, in order."""
        return [c for c in self.calls if c.kind == kind]

    def in_thread(self, root_activity_id: str) -> list[ConnectorCall]:
        """Messages sent into the thread under a root post."""
        return [
            c
            for c in self.calls
            if c.kind == "send" and c.conversation_id.endswith(f";messageid={root_activity_id}")
        ]

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        channel = ((body.get("channelData") or {}).get("channel") or {}).get("id", "unknown")
        activity_id = f"post-{next(self._ids)}"
        conversation_id = f"{channel};messageid={activity_id}"
        self.calls.append(ConnectorCall("create", conversation_id, activity_id, body))
        return web.json_response(
            {"id": conversation_id, "activityId": activity_id, "serviceUrl": self.service_url}
        )

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        activity_id = f"msg-{next(self._ids)}"
        self.calls.append(ConnectorCall("send", request.match_info["cid"], activity_id, body))
        return web.json_response({"id": activity_id})

    async def _update(self, request: web.Request) -> web.Response:
        body = await request.json()
        activity_id = request.match_info["aid"]
        self.calls.append(ConnectorCall("update", request.match_info["cid"], activity_id, body))
        return web.json_response({"id": activity_id})
