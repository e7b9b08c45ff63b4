"""``POST /api/messages`` for either Teams transport: the checks, the order, and every answer.

The request is read and checked here (size, JSON, the activity's shape, a first look at the
token), then the transport's SDK parses the activity, validates the token and runs the turn, in
which :class:`bot.teams.routing.ActivityRouter` does the work; the outcome becomes the answer
here. So botbuilder and the Microsoft 365 Agents SDK answer every request alike: the same status
codes and JSON bodies for bad input, 401 for every forged token, 403 for another tenant, 503 when
the signing keys or the store cannot be reached, the card-action error bodies Teams shows to the
person who clicked. Nothing here imports either SDK.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jwt
from aiohttp import web

from bot.errors import RemediationError
from bot.log_context import bind_ids, fresh_ids
from bot.services.ports import Messenger
from bot.teams.routing import CARD_ACTION_INVOKE, ActivityRouter, SendText, TurnOutcome
from bot.teams.shape import activity_problem
from bot.tracing import annotate, traced
from bot.web.jsonguard import UnsafeJson, load_json, read_at_most

log = logging.getLogger(__name__)

MAX_ACTIVITY_BYTES = 256 * 1024
# The issuer of the tokens the Bot Connector sends to bots (both SDKs name it the same).
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"


class Unauthenticated(Exception):
    """The token was not accepted; the argument says why (for the log, never the sender)."""


class KeysUnavailable(Exception):
    """The signing keys could not be fetched: not the sender's fault (503)."""


class Inbound(Protocol):
    """What a Teams transport's SDK does for one inbound request."""

    def parse(self, body: dict[str, Any]) -> Any:
        """The SDK's activity model of ``body``; raises on a body the SDK cannot read."""

    async def authenticate(self, activity: Any, auth_header: str) -> tuple[Any, Mapping[str, Any]]:
        """The SDK's identity for the turn and the token's validated claims (empty without a
        token); raises :class:`Unauthenticated` or :class:`KeysUnavailable`."""

    async def run_turn(self, identity: Any, activity: Any, turn: TurnBody) -> None:
        """Open a turn in the SDK's adapter and run ``turn`` in it with a reply sender."""


class TurnBody(Protocol):
    async def __call__(self, send_text: SendText) -> None: ...


class PacedMessenger(Messenger, Protocol):
    def observe_pacing(self, on_wait: Callable[[float], None]) -> None:
        """Report how long each Bot Connector call waited for Teams' rate limits."""


class TeamsTransport(Protocol):
    """A Teams transport, as the app uses it: the inbound half and the messenger."""

    @property
    def inbound(self) -> Inbound: ...

    @property
    def messenger(self) -> PacedMessenger: ...


async def log_turn_error(turn_context: Any, error: Exception) -> None:
    """Either adapter's ``on_turn_error``: one log line with the ids (botbuilder's default is
    the same line; the Agents SDK's sends the exception's text into the conversation)."""
    activity = turn_context.activity
    log.error(
        "turn failed (activity %s, type %s): %s",
        getattr(activity, "id", None),
        getattr(activity, "type", None),
        error,
        exc_info=error,
    )


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@fresh_ids()
@traced("teams activity")
async def handle_activity(
    request: web.Request, inbound: Inbound, router: ActivityRouter, *, authenticate: bool = True
) -> web.Response:
    """``POST /api/messages``: validate the request, authenticate, check the tenant, run the turn.

    Every answer is JSON: 4xx when the request is at fault (its size, JSON, shape, token or
    tenant), 503 when the bot cannot reach what it needs (its store, the signing keys), and a
    logged 500 only for a fault of the bot itself. With ``authenticate`` off (``SANDBOX_MODE``
    without an app id) an ``Authorization`` header is ignored rather than checked: it could only
    make the SDK fetch signing keys from the internet for a bot that trusts nobody's token.
    """
    try:
        return await _handle_activity(request, inbound, router, authenticate)
    except Exception:
        log.exception("activity from %s: unexpected failure", request.remote)
        return json_error(500, "InternalError", "The bot failed to handle this activity; nothing was done.")


async def _handle_activity(
    request: web.Request, inbound: Inbound, router: ActivityRouter, authenticate: bool
) -> web.Response:
    if request.content_type != "application/json":
        return json_error(415, "UnsupportedMediaType", "Send the activity as application/json.")
    if request.content_length is not None and request.content_length > MAX_ACTIVITY_BYTES:
        return json_error(413, "PayloadTooLarge", f"Activities are limited to {MAX_ACTIVITY_BYTES} bytes.")
    raw = await read_at_most(request.content.iter_chunked(64 * 1024), MAX_ACTIVITY_BYTES)
    if raw is None:
        return json_error(413, "PayloadTooLarge", f"Activities are limited to {MAX_ACTIVITY_BYTES} bytes.")
    try:
        body = load_json(raw)
    except UnsafeJson as exc:
        return json_error(400, "BadRequest", exc.message)
    if not isinstance(body, dict):
        return json_error(400, "BadRequest", "The body must be a JSON object (a Bot Framework activity).")
    problem = activity_problem(body)
    if problem:
        return json_error(
            400, "BadRequest", f"The body is not a Bot Framework activity the bot can read: {problem}"
        )
    try:
        activity = inbound.parse(body)
    except Exception as exc:  # each SDK's model raises its own types for bad shapes
        return json_error(400, "BadRequest", f"The body is not a Bot Framework activity: {str(exc)[:200]}")
    auth_header = request.headers.get("Authorization", "") if authenticate else ""
    refused = token_problem(auth_header) if auth_header else None
    if refused:
        return _unauthorized(body, refused)
    try:
        identity, claims = await inbound.authenticate(activity, auth_header)
    except Unauthenticated as exc:
        return _unauthorized(body, str(exc))
    except KeysUnavailable as exc:
        log.error("activity %s: the Bot Framework signing keys could not be fetched: %s", body.get("id"), exc)
        return json_error(
            503, "Unavailable", "The bot cannot check tokens just now; send the activity again."
        )
    if auth_header and not _is_number(claims.get("exp")):
        return _unauthorized(body, "the token has no expiry")
    bind_ids(activity_id=body.get("id"))
    annotate(**{"activity.type": str(body.get("type") or ""), "activity.name": str(body.get("name") or "")})
    outcomes: list[TurnOutcome] = []

    async def turn(send_text: SendText) -> None:
        outcomes.append(await router.run(body, send_text))

    await inbound.run_turn(identity, activity, turn)
    if not outcomes:
        log.error("activity %s: the adapter did not run the turn", body.get("id"))
        return json_error(500, "InternalError", "The bot failed to handle this activity.")
    return answer(body, outcomes[0])


def answer(body: dict[str, Any], outcome: TurnOutcome) -> web.Response:
    """The HTTP answer to a turn that ran."""
    card_action = body.get("type") == "invoke" and body.get("name") == CARD_ACTION_INVOKE
    if outcome.refusal is not None:
        message = "This bot serves another organisation's Teams; nothing was done."
        if card_action:
            return card_error(403, "Forbidden", message)
        return json_error(403, "Forbidden", message)
    failure = outcome.failure
    if failure is not None:
        if isinstance(failure, RemediationError):
            log.error("activity %s (%s) failed: %s", body.get("id"), body.get("type"), failure.message)
            message = f"The bot could not complete that just now: {failure.message} Try again."
            if card_action:
                return card_error(503, "Unavailable", message)
            return json_error(503, "Unavailable", message)
        log.error("activity %s (%s) failed", body.get("id"), body.get("type"), exc_info=failure)
        return json_error(500, "InternalError", "The bot failed to handle this activity.")
    if outcome.invoke is None:
        return web.Response(status=201)
    return web.json_response(outcome.invoke.body, status=outcome.invoke.status)


def card_error(status: int, code: str, message: str) -> web.Response:
    # For a card action Teams shows the message to the person who clicked (HTTP 200, as asked).
    return web.json_response(
        {
            "statusCode": status,
            "type": "application/vnd.microsoft.error",
            "value": {"code": code, "message": message},
        }
    )


def token_problem(auth_header: str) -> str | None:
    """A first look at the token, before the SDK validates it (and may crash on it).

    Only what the Bot Connector sends gets further: a Bearer JWT signed with RS256 naming its
    key, issued by the Bot Framework, with an expiry. The signature is checked by the SDK.
    """
    scheme, _, token = auth_header.partition(" ")
    if scheme != "Bearer" or not token or " " in token:
        return "not a Bearer token"
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return "a malformed token"
    if header.get("alg") != "RS256":
        return "a signing algorithm other than RS256"
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        return "no key id"
    if claims.get("iss") != BOT_FRAMEWORK_ISSUER:
        return "another issuer than the Bot Framework"
    if not _is_number(claims.get("exp")):
        return "the token has no expiry"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unauthorized(body: dict[str, Any], reason: str) -> web.Response:
    log.warning(
        "rejected activity %s from %s: authentication failed (%s)",
        body.get("id"),
        body.get("serviceUrl"),
        reason,
    )
    return json_error(401, "Unauthorized", "The request's Bot Framework token is missing or invalid.")
