"""A recording Bot Connector on loopback: the Teams side of the bot's outbound calls.

It answers the Bot Connector REST calls botbuilder makes (create conversation, send, reply,
update) the way Teams does for channel posts, and records each call so tests can assert what a
channel would have shown.

Optional behaviours, all off by default: ``emulate_limits=True`` enforces rate limits of Teams'
shape (per conversation id 7/1 s, 8/2 s, 60/30 s, 1800/1 h; 50/1 s across the tenant; tests give
smaller ones) and answers 429 with a ``Retry-After`` when a call would exceed them;
``documented_limits=True`` enforces instead Teams' limits as Microsoft documents them, from this
module's own table (:data:`TEAMS_DOCUMENTED_LIMITS`, sources quoted there);
:meth:`RecordingConnector.fail_next` makes the next calls of one kind fail (412, 502, 503, 504,
403, ... or :data:`DROP` for a connection closed without an answer). Only the calls Teams would
have carried out are in ``calls``; ``answered`` lists every request with the status it got, and
``exchanges`` when each arrived and was answered (benchmarks time the bot against them).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

# (calls, seconds) for ``emulate_limits``: Teams' shape, one window set per conversation id.
TEAMS_THREAD_LIMITS: tuple[tuple[int, float], ...] = ((7, 1.0), (8, 2.0), (60, 30.0), (1800, 3600.0))
TEAMS_TENANT_LIMITS: tuple[tuple[int, float], ...] = ((50, 1.0),)

# Teams' rate limits for bots as Microsoft documents them (``documented_limits=True``), read from
# the page itself and not from the bot's pacer (bot/teams/pacing.py):
# "Optimize your bot with rate limiting in Teams",
# https://learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit (its source:
# msteams-platform/bots/how-to/rate-limit.md in MicrosoftDocs/msteams-docs).
# - "Per bot per thread limit", by scenario (time period in seconds, maximum operations):
#   "Send to conversation" 1 s 7, 2 s 8, 30 s 60, 3600 s 1800; "Create conversation" the same.
# - "The thread limit of 3600 seconds and 1800 operations applies only if multiple bot messages
#   are sent to a single user": the hour row counts in personal (1:1) conversations only.
# - "A conversation is 1:1 between bot and user, a group chat, or a channel in a team": read as
#   written, every thread of a channel is the channel's one conversation (``thread_scope
#   "channel"``); ``thread_scope="conversation"`` counts each Bot Connector conversation id (a
#   reply thread is ``<channel>;messageid=<root>``) on its own instead.
# - "All requests are subject to the same rate limiting policy, including sending messages,
#   channel enumerations, and roster fetches": a card update counts as a send.
# - "Per thread limit for all bots": send and create 14 per 1 s, 16 per 2 s. One bot alone meets
#   its own 7 and 8 first, so these never bind here and are not enforced.
# - "The global limit per app per tenant is 50 Requests Per Second (RPS)" (an earlier revision of
#   the page said 30).
TEAMS_DOCUMENTED_LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "send": ((7, 1.0), (8, 2.0), (60, 30.0)),
    "create": ((7, 1.0), (8, 2.0), (60, 30.0)),
}
TEAMS_DOCUMENTED_PERSONAL_LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    kind: (*limits, (1800, 3600.0)) for kind, limits in TEAMS_DOCUMENTED_LIMITS.items()
}
TEAMS_DOCUMENTED_TENANT_LIMITS: tuple[tuple[int, float], ...] = ((50, 1.0),)
# A "status" for fail_next: close the connection after reading the request, without answering.
DROP = 0
_DROPPED = web.RequestKey("dropped", bool)
_REASONS = {
    403: ("BotNotInConversationRoster", "The bot is not part of the conversation roster."),
    412: ("PreconditionFailed", "A precondition failed; try again."),
    429: ("Throttled", "Too many requests."),
    502: ("ServiceError", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is unavailable."),
    504: ("GatewayTimeout", "The gateway timed out."),
}


@dataclass
class ConnectorCall:
    """One call the bot made: ``kind`` is create, send or update."""

    kind: str
    conversation_id: str
    activity_id: str
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # when it was accepted (benchmarks)
    size: int = 0  # bytes of the request body as the bot sent it

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


@dataclass(frozen=True)
class Exchange:
    """One request as the connector saw it: ``arrived`` and ``answered`` are ``time.monotonic()``."""

    method: str
    path: str
    kind: str  # create, send or update
    conversation_id: str  # "" for a create
    status: int
    arrived: float
    answered: float


@dataclass
class _Failure:
    status: int
    times: int
    retry_after: str | None


@dataclass
class RecordingConnector:
    """Start with :meth:`start`; ``service_url`` goes into the activities the test sends.

    ``emulate_limits`` turns on Teams' rate limits (``thread_limits`` per conversation id,
    ``tenant_limits`` across all calls, both ``(calls, seconds)`` sliding windows over the times
    calls were accepted); ``documented_limits`` turns on Microsoft's documented ones instead (see
    :data:`TEAMS_DOCUMENTED_LIMITS`; ``thread_scope`` says what a thread is). ``throttled``
    counts the 429s answered and ``failed`` the failures injected with :meth:`fail_next`.
    """

    calls: list[ConnectorCall] = field(default_factory=list)
    emulate_limits: bool = False
    thread_limits: tuple[tuple[int, float], ...] = TEAMS_THREAD_LIMITS
    tenant_limits: tuple[tuple[int, float], ...] = TEAMS_TENANT_LIMITS
    documented_limits: bool = False
    thread_scope: str = "channel"
    exchanges: list[Exchange] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    throttled: int = 0
    failed: int = 0
    # Seconds every call waits before it is answered (a Bot Connector that is slow to answer).
    hold: float = 0.0
    # Every request as (kind, conversation id, status); DROP for a dropped connection.
    answered: list[tuple[str, str, int]] = field(default_factory=list)
    _server: TestServer | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1000))
    _accepted: dict[str, deque[float]] = field(default_factory=dict)
    _tenant: deque[float] = field(default_factory=deque)
    _failures: dict[str, deque[_Failure]] = field(default_factory=dict)

    async def start(self) -> None:
        """Serve on a free loopback port."""
        if self.thread_scope not in ("channel", "conversation"):
            raise ValueError(f"thread_scope is channel or conversation, not {self.thread_scope!r}")
        app = web.Application(middlewares=[self._timed])
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

    def fail_next(self, kind: str, status: int, times: int = 1, *, retry_after: str | None = None) -> None:
        """Answer the next ``times`` calls of ``kind`` (create, send or update) with ``status``.

        The body is Teams-shaped (``{"error": {"code", "message"}}``); ``retry_after`` becomes
        the ``Retry-After`` header. ``DROP`` closes the connection once the request has arrived.
        Failures queued for one kind are used up in the order they were queued.
        """
        if kind not in ("create", "send", "update"):
            raise ValueError(f"unknown kind {kind!r}")
        self._failures.setdefault(kind, deque()).append(_Failure(status, times, retry_after))

    @web.middleware
    async def _timed(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        arrived = time.monotonic()
        if self.hold:
            await asyncio.sleep(self.hold)
        response = await handler(request)
        cid = request.match_info.get("cid", "")
        kind = "update" if request.method == "PUT" else "send" if cid else "create"
        status = DROP if request.get(_DROPPED) else response.status
        self.exchanges.append(
            Exchange(request.method, request.path, kind, cid, status, arrived, time.monotonic())
        )
        return response

    async def _create(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        channel = ((body.get("channelData") or {}).get("channel") or {}).get("id", "unknown")
        refusal = self._refuse(request, "create", channel)
        if refusal is not None:
            return refusal
        activity_id = f"post-{next(self._ids)}"
        conversation_id = f"{channel};messageid={activity_id}"
        self.calls.append(ConnectorCall("create", conversation_id, activity_id, body, size=len(raw)))
        return web.json_response(
            {"id": conversation_id, "activityId": activity_id, "serviceUrl": self.service_url}
        )

    async def _send(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        refusal = self._refuse(request, "send", request.match_info["cid"])
        if refusal is not None:
            return refusal
        activity_id = f"msg-{next(self._ids)}"
        self.calls.append(ConnectorCall("send", request.match_info["cid"], activity_id, body, size=len(raw)))
        return web.json_response({"id": activity_id})

    async def _update(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        refusal = self._refuse(request, "update", request.match_info["cid"])
        if refusal is not None:
            return refusal
        activity_id = request.match_info["aid"]
        self.calls.append(
            ConnectorCall("update", request.match_info["cid"], activity_id, body, size=len(raw))
        )
        return web.json_response({"id": activity_id})

    def _refuse(self, request: web.Request, kind: str, key: str) -> web.StreamResponse | None:
        """The answer for a call Teams would not carry out, or None to accept (and count) it."""
        queued = self._failures.get(kind)
        if queued:
            failure = queued[0]
            failure.times -= 1
            if failure.times <= 0:
                queued.popleft()
            self.failed += 1
            self.answered.append((kind, key, failure.status))
            if failure.status == DROP:
                request[_DROPPED] = True
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)  # never written: the connection is gone
            return _error(failure.status, failure.retry_after)
        if self.documented_limits:
            now = self.clock()
            key, limits = self._documented(kind, key)
            wait = max(
                _window_wait(self._accepted.setdefault(key, deque()), limits, now),
                _window_wait(self._tenant, TEAMS_DOCUMENTED_TENANT_LIMITS, now),
            )
            if wait > 0:
                self.throttled += 1
                self.answered.append((kind, key, 429))
                return _error(429, f"{wait:.3f}")
            self._accepted[key].append(now)
            self._tenant.append(now)
        elif self.emulate_limits:
            now = self.clock()
            wait = max(
                _window_wait(self._accepted.setdefault(key, deque()), self.thread_limits, now),
                _window_wait(self._tenant, self.tenant_limits, now),
            )
            if wait > 0:
                self.throttled += 1
                self.answered.append((kind, key, 429))
                return _error(429, f"{wait:.3f}")
            self._accepted[key].append(now)
            self._tenant.append(now)
        self.answered.append((kind, key, 200))
        return None

    def _documented(self, kind: str, key: str) -> tuple[str, tuple[tuple[int, float], ...]]:
        """The windows a call counts in under the documented limits, and their key."""
        scenario = "create" if kind == "create" else "send"  # an update is a send (see the table)
        thread = key.partition(";")[0] if self.thread_scope == "channel" else key
        # Teams ids: a channel or group chat is 19:...; anything else is a personal chat.
        table = TEAMS_DOCUMENTED_LIMITS if thread.startswith("19:") else TEAMS_DOCUMENTED_PERSONAL_LIMITS
        return f"{scenario} {thread}", table[scenario]


def _window_wait(accepted: deque[float], limits: tuple[tuple[int, float], ...], now: float) -> float:
    """Seconds until one more call fits every window (0.0: it fits now). A call accepted at ``t``
    counts in the window of length ``s`` ending now while ``t + s > now``."""
    horizon = max((seconds for _, seconds in limits), default=0.0)
    while accepted and accepted[0] + horizon <= now:
        accepted.popleft()
    wait = 0.0
    for calls, seconds in limits:
        inside = [t for t in accepted if t + seconds > now]
        if len(inside) >= calls:
            # The oldest calls leave first; room comes when the (len - calls + 1)-th oldest leaves.
            wait = max(wait, inside[len(inside) - calls] + seconds - now)
    return wait


def _error(status: int, retry_after: str | None) -> web.Response:
    code, message = _REASONS.get(status, ("Error", "The request failed."))
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)
