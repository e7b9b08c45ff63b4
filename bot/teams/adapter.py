"""The Bot Framework adapter and the ``/api/messages`` endpoint.

Inbound JWT validation is botbuilder's; this module makes its failures answer 401 instead of
escaping as 500s (a forged token signed by another key, an expired token or an unknown key id
raise from inside ``process_activity`` on botbuilder 4.17.1), and turns malformed requests into a
400 with a JSON body instead of a stack trace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from botbuilder.core import Bot, InvokeResponse, TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import Activity
from botframework.connector.auth import AuthenticationConstants
from msrest.universal_http.requests import ClientRetryPolicy

from bot.config.settings import Settings
from bot.errors import RemediationError
from bot.log_context import bind_ids, fresh_ids
from bot.teams.handler import REFUSAL_KEY, Refusal
from bot.teams.shape import CARD_ACTION_INVOKE, activity_problem
from bot.teams.tokens import OffLoopCredentialsFactory
from bot.tracing import annotate, traced
from bot.web.jsonguard import UnsafeJson, load_json, read_at_most

log = logging.getLogger(__name__)

MAX_ACTIVITY_BYTES = 256 * 1024


def _faster_client_construction() -> None:
    """botbuilder builds two msrest clients for every turn (the connector and the user token
    client), inbound and proactive alike, and each builds a ``ClientRetryPolicy`` that tests 999
    status codes for membership in a *list* of 501 "safe" codes: 4-5 ms of CPU per client, the
    largest single cost of a click. The same codes in a frozenset give the same retry codes at a
    hundredth of the cost. (The messenger switches those transport retries off anyway.)"""
    if not isinstance(ClientRetryPolicy.safe_codes, frozenset):
        # msrest declares the attribute a list; a frozenset answers the same `in` tests it makes.
        ClientRetryPolicy.safe_codes = frozenset(ClientRetryPolicy.safe_codes)  # type: ignore[assignment]


_faster_client_construction()


@dataclass(frozen=True)
class _BotFrameworkConfig:
    """The attribute names ConfigurationBotFrameworkAuthentication reads."""

    APP_ID: str
    APP_PASSWORD: str
    APP_TYPE: str
    APP_TENANTID: str


def build_adapter(settings: Settings) -> CloudAdapter:
    """A CloudAdapter validating inbound tokens whenever ``MicrosoftAppId`` is set, and fetching
    its outbound token off the event loop (:mod:`bot.teams.tokens`)."""
    config = _BotFrameworkConfig(
        APP_ID=settings.microsoft_app_id,
        APP_PASSWORD=settings.microsoft_app_password.get_secret_value(),
        # With no app id (the sandbox, authentication off) there is no identity to be single-tenant
        # with: botbuilder's authentication-disabled path is its multi-tenant one.
        APP_TYPE=settings.microsoft_app_type if settings.microsoft_app_id else "MultiTenant",
        APP_TENANTID=settings.tenant_id,
    )
    credentials = OffLoopCredentialsFactory(ConfigurationServiceClientCredentialFactory(config))
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(config, credentials_factory=credentials))

    async def on_error(turn_context: Any, error: Exception) -> None:
        activity = turn_context.activity
        log.exception(
            "turn failed (activity %s, type %s): %s",
            getattr(activity, "id", None),
            getattr(activity, "type", None),
            error,
            exc_info=error,
        )

    adapter.on_turn_error = on_error
    return adapter


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@fresh_ids()
@traced("teams activity")
async def handle_activity(
    request: web.Request, adapter: CloudAdapter, bot: Bot, *, authenticate: bool = True
) -> web.Response:
    """``POST /api/messages``: validate the request, authenticate, check the tenant, run the turn.

    Every answer is JSON: 4xx when the request is at fault (its size, JSON, shape, token or
    tenant), 503 when the bot cannot reach what it needs (its store, the signing keys), and a
    logged 500 only for a fault of the bot itself. With ``authenticate`` off (``SANDBOX_MODE``
    without an app id) an ``Authorization`` header is ignored rather than checked: it could only
    make botframework fetch signing keys from the internet for a bot that trusts nobody's token.
    """
    try:
        return await _handle_activity(request, adapter, bot, authenticate)
    except Exception:
        log.exception("activity from %s: unexpected failure", request.remote)
        return _json_error(500, "InternalError", "The bot failed to handle this activity; nothing was done.")


async def _handle_activity(
    request: web.Request, adapter: CloudAdapter, bot: Bot, authenticate: bool
) -> web.Response:
    if request.content_type != "application/json":
        return _json_error(415, "UnsupportedMediaType", "Send the activity as application/json.")
    if request.content_length is not None and request.content_length > MAX_ACTIVITY_BYTES:
        return _json_error(413, "PayloadTooLarge", f"Activities are limited to {MAX_ACTIVITY_BYTES} bytes.")
    raw = await read_at_most(request.content.iter_chunked(64 * 1024), MAX_ACTIVITY_BYTES)
    if raw is None:
        return _json_error(413, "PayloadTooLarge", f"Activities are limited to {MAX_ACTIVITY_BYTES} bytes.")
    try:
        body = load_json(raw)
    except UnsafeJson as exc:
        return _json_error(400, "BadRequest", exc.message)
    if not isinstance(body, dict):
        return _json_error(400, "BadRequest", "The body must be a JSON object (a Bot Framework activity).")
    problem = activity_problem(body)
    if problem:
        return _json_error(
            400, "BadRequest", f"The body is not a Bot Framework activity the bot can read: {problem}"
        )
    try:
        activity = Activity().deserialize(body)
    except Exception as exc:  # msrest raises a handful of unrelated types for bad shapes
        return _json_error(400, "BadRequest", f"The body is not a Bot Framework activity: {str(exc)[:200]}")
    auth_header = request.headers.get("Authorization", "") if authenticate else ""
    refused = _token_problem(auth_header) if auth_header else None
    if refused:
        return _unauthorized(activity, refused)
    try:
        authenticated = await adapter.bot_framework_authentication.authenticate_request(activity, auth_header)
    except PermissionError:
        return _unauthorized(activity, "no valid token")
    except OSError as exc:
        # requests' errors are OSErrors: the signing keys could not be fetched. Not the sender's fault.
        log.error("activity %s: the Bot Framework signing keys could not be fetched: %s", activity.id, exc)
        return _json_error(
            503, "Unavailable", "The bot cannot check tokens just now; send the activity again."
        )
    except Exception as exc:
        # botframework raises bare Exceptions, jwt errors, IndexError, KeyError... for bad tokens.
        return _unauthorized(activity, type(exc).__name__)
    if auth_header and not _expires(authenticated.claims_identity):
        return _unauthorized(activity, "the token has no expiry")
    bind_ids(activity_id=activity.id)
    annotate(**{"activity.type": str(activity.type or ""), "activity.name": str(activity.name or "")})
    turn = _Turn(bot)
    invoke_response = await adapter.process_activity(authenticated, activity, turn.run)
    return turn.answer(activity, invoke_response)


class _Turn:
    """Runs the bot for one activity and remembers how the turn ended, for the HTTP answer."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot
        self.failure: Exception | None = None
        self.refusal: Refusal | None = None

    async def run(self, turn_context: TurnContext) -> None:
        try:
            await self._bot.on_turn(turn_context)
        except Exception as exc:  # answered by answer(); botbuilder would turn it into a 501
            self.failure = exc
        refusal = turn_context.turn_state.get(REFUSAL_KEY)
        self.refusal = refusal if isinstance(refusal, Refusal) else None

    def answer(self, activity: Activity, invoke_response: InvokeResponse | None) -> web.Response:
        card_action = activity.type == "invoke" and activity.name == CARD_ACTION_INVOKE
        if self.refusal is not None:
            message = "This bot serves another organisation's Teams; nothing was done."
            if card_action:
                return _card_error(403, "Forbidden", message)
            return _json_error(403, "Forbidden", message)
        if self.failure is not None:
            if isinstance(self.failure, RemediationError):
                log.error("activity %s (%s) failed: %s", activity.id, activity.type, self.failure.message)
                message = f"The bot could not complete that just now: {self.failure.message} Try again."
                if card_action:
                    return _card_error(503, "Unavailable", message)
                return _json_error(503, "Unavailable", message)
            log.error("activity %s (%s) failed", activity.id, activity.type, exc_info=self.failure)
            return _json_error(500, "InternalError", "The bot failed to handle this activity.")
        if invoke_response is None:
            return web.Response(status=201)
        body_out = invoke_response.body
        if hasattr(body_out, "serialize"):
            body_out = body_out.serialize()
        return web.json_response(body_out, status=invoke_response.status)


def _card_error(status: int, code: str, message: str) -> web.Response:
    # For a card action Teams shows the message to the person who clicked (HTTP 200, as asked).
    return web.json_response(
        {
            "statusCode": status,
            "type": "application/vnd.microsoft.error",
            "value": {"code": code, "message": message},
        }
    )


def _token_problem(auth_header: str) -> str | None:
    """A first look at the token, before botframework validates it (and may crash on it).

    Only what the Bot Connector sends gets further: a Bearer JWT signed with RS256 naming its
    key, issued by the Bot Framework, with an expiry. The signature is checked by botframework.
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
    if claims.get("iss") != AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER:
        return "another issuer than the Bot Framework"
    if not _is_number(claims.get("exp")):
        return "the token has no expiry"
    return None


def _expires(identity: Any) -> bool:
    """Whether the validated token carries an expiry (pyjwt checks ``exp`` only when present)."""
    claims = getattr(identity, "claims", None)
    return isinstance(claims, dict) and _is_number(claims.get("exp"))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unauthorized(activity: Activity, reason: str) -> web.Response:
    log.warning(
        "rejected activity %s from %s: authentication failed (%s)",
        activity.id,
        activity.service_url,
        reason,
    )
    return _json_error(401, "Unauthorized", "The request's Bot Framework token is missing or invalid.")
