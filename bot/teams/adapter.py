"""The Bot Framework adapter and the ``/api/messages`` endpoint.

Inbound JWT validation is botbuilder's; this module makes its failures answer 401 instead of
escaping as 500s (a forged token signed by another key, an expired token or an unknown key id
raise from inside ``process_activity`` on botbuilder 4.17.1), and turns malformed requests into a
400 with a JSON body instead of a stack trace.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from botbuilder.core import Bot
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import Activity

from bot.config import Settings

log = logging.getLogger(__name__)

MAX_ACTIVITY_BYTES = 256 * 1024


@dataclass(frozen=True)
class _BotFrameworkConfig:
    """The attribute names ConfigurationBotFrameworkAuthentication reads."""

    APP_ID: str
    APP_PASSWORD: str
    APP_TYPE: str
    APP_TENANTID: str


def build_adapter(settings: Settings) -> CloudAdapter:
    """A CloudAdapter validating inbound tokens whenever ``MicrosoftAppId`` is set."""
    config = _BotFrameworkConfig(
        APP_ID=settings.microsoft_app_id,
        APP_PASSWORD=settings.microsoft_app_password,
        APP_TYPE=settings.microsoft_app_type,
        APP_TENANTID=settings.microsoft_app_tenant_id,
    )
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(config))

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


async def handle_activity(request: web.Request, adapter: CloudAdapter, bot: Bot) -> web.Response:
    """``POST /api/messages``: validate the request, authenticate, run the turn."""
    if request.content_type != "application/json":
        return _json_error(415, "UnsupportedMediaType", "Send the activity as application/json.")
    if request.content_length is not None and request.content_length > MAX_ACTIVITY_BYTES:
        return _json_error(413, "PayloadTooLarge", f"Activities are limited to {MAX_ACTIVITY_BYTES} bytes.")
    raw = await request.read()
    if len(raw) > MAX_ACTIVITY_BYTES:
        return _json_error(413, "PayloadTooLarge", f"Activities are limited to {MAX_ACTIVITY_BYTES} bytes.")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _json_error(400, "BadRequest", f"The body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _json_error(400, "BadRequest", "The body must be a JSON object (a Bot Framework activity).")
    try:
        activity = Activity().deserialize(body)
    except Exception as exc:  # msrest raises a handful of unrelated types for bad shapes
        return _json_error(400, "BadRequest", f"The body is not a Bot Framework activity: {exc}")
    if not activity.type:
        return _json_error(400, "BadRequest", "The activity has no type.")
    auth_header = request.headers.get("Authorization", "")
    try:
        invoke_response = await adapter.process_activity(auth_header, activity, bot.on_turn)
    except PermissionError as exc:
        return _unauthorized(activity, exc)
    except (jwt.PyJWTError, IndexError, KeyError, ValueError) as exc:
        # botbuilder 4.17.1 lets these escape for forged, expired or unknown-key tokens.
        return _unauthorized(activity, exc)
    if invoke_response is None:
        return web.Response(status=201)
    body_out = invoke_response.body
    if hasattr(body_out, "serialize"):
        body_out = body_out.serialize()
    return web.json_response(body_out, status=invoke_response.status)


def _unauthorized(activity: Activity, exc: Exception) -> web.Response:
    log.warning(
        "rejected activity %s from %s: authentication failed (%s)",
        activity.id,
        activity.service_url,
        type(exc).__name__,
    )
    return _json_error(401, "Unauthorized", "The request's Bot Framework token is missing or invalid.")
