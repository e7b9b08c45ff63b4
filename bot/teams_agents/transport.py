"""The Teams transport on the Microsoft 365 Agents SDK 1.9 (``TEAMS_SDK=agents``).

The SDK's aiohttp ``CloudAdapter`` runs each turn and its connector client sends to Teams; its
``JwtTokenValidator`` checks inbound tokens. The request's checks, the order and every answer are
:mod:`bot.teams.edge`'s, the turn's work :class:`bot.teams.routing.ActivityRouter`'s, shared with
the botbuilder transport, so both answer alike. Where the SDK does less than botbuilder, this
module does the rest (README "Teams SDK"):

- the validator checks the signature, expiry (300 s leeway) and audience, but not that the
  token's ``serviceurl`` claim names the activity's ``serviceUrl`` (it only logs a mismatch):
  checked here, 401 like botbuilder;
- it raises ``PyJWKClientConnectionError`` when the signing keys cannot be fetched: 503 here;
  the keys are fetched in a worker thread (``asyncio.to_thread``), off the event loop;
- the outbound token comes from msal through the SDK's ``MsalAuth``, which asks msal in a worker
  thread; one ``MsalAuth`` per process keeps msal's token cache between turns;
- the adapter's default ``on_turn_error`` sends the exception's text into the conversation: it
  only logs here.

Teams' own package (``microsoft-agents-hosting-teams``) stops at 0.9 and pins an older
hosting-core; the Teams pieces used here (``TeamsConnectorClient``, the channel data models)
ship inside hosting-core and activity 1.9.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from jwt import (
    PyJWKClient,
    PyJWKClientConnectionError,
    PyJWKClientError,
    PyJWTError,
    decode,
    get_unverified_header,
)
from microsoft_agents.activity import Activity, ConversationAccount
from microsoft_agents.authentication.msal import MsalAuth
from microsoft_agents.hosting.aiohttp import CloudAdapter
from microsoft_agents.hosting.core import MessageFactory, TurnContext
from microsoft_agents.hosting.core.authorization import (
    AgentAuthConfiguration,
    AuthTypes,
    ClaimsIdentity,
    _entra_issuers,
)
from microsoft_agents.hosting.core.authorization.jwt import JwtTokenValidator
from microsoft_agents.hosting.core.connector import ConnectorClientBase
from microsoft_agents.hosting.core.connector.client import UserTokenClient
from microsoft_agents.hosting.core.connector.teams import TeamsConnectorClient

from bot.config.settings import Settings
from bot.teams.edge import KeysUnavailable, TurnBody, Unauthenticated, log_turn_error
from bot.teams_agents.messenger import AgentsMessenger

log = logging.getLogger(__name__)

BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
TOKEN_SERVICE = "https://api.botframework.com"


def auth_configuration(settings: Settings) -> AgentAuthConfiguration:
    """The SDK's view of the bot's identity: app id, secret or managed identity, tenant."""
    single = settings.microsoft_app_type != "MultiTenant"
    return AgentAuthConfiguration(
        auth_type=(
            AuthTypes.user_managed_identity
            if settings.microsoft_app_type == "UserAssignedMSI"
            else AuthTypes.client_secret
        ),
        client_id=settings.microsoft_app_id or None,
        # A multi-tenant bot gets its Bot Connector token from the botframework.com tenant.
        tenant_id=(settings.tenant_id if single else "botframework.com")
        if settings.microsoft_app_id
        else None,
        client_secret=settings.microsoft_app_password.get_secret_value() or None,
        anonymous_allowed=not settings.microsoft_app_id,
    )


class ClientFactory:
    """Connector clients for the SDK's adapter, with the bot's outbound token (or none with
    authentication off). A user token client with no token: the bot offers no sign-in."""

    def __init__(self, settings: Settings) -> None:
        self._app_id = settings.microsoft_app_id
        self._msal = MsalAuth(auth_configuration(settings)) if settings.microsoft_app_id else None

    async def create_connector_client(
        self,
        context: TurnContext | None,
        claims_identity: ClaimsIdentity,
        service_url: str,
        audience: str,
        scopes: list[str] | None = None,
        use_anonymous: bool = False,
    ) -> ConnectorClientBase:
        token = ""
        if self._msal is not None:
            try:
                # msal runs in a worker thread (MsalAuth); its cache answers most turns.
                token = await self._msal.get_access_token(TOKEN_SERVICE, [BOT_FRAMEWORK_SCOPE])
            except Exception as exc:  # a send then fails with Teams' 401, as the logs say why
                log.warning("Bot Connector token: could not be fetched (%s)", type(exc).__name__)
        return TeamsConnectorClient(endpoint=service_url, token=token)

    async def create_user_token_client(
        self, context: TurnContext, claims_identity: ClaimsIdentity, use_anonymous: bool = False
    ) -> UserTokenClient:
        return UserTokenClient(TOKEN_SERVICE, "", app_id=self._app_id or None)


def build_adapter(settings: Settings) -> CloudAdapter:
    """The SDK's CloudAdapter with :class:`ClientFactory` and a turn error that only logs."""
    adapter = CloudAdapter(channel_service_client_factory=ClientFactory(settings))

    adapter.on_turn_error = log_turn_error
    return adapter


class AgentsInbound:
    """The inbound half of the Agents SDK transport (:class:`bot.teams.edge.Inbound`)."""

    def __init__(self, adapter: CloudAdapter, settings: Settings) -> None:
        self._adapter = adapter
        self._config = auth_configuration(settings)
        self._auth_enabled = settings.auth_enabled
        self._endorsements = Endorsements()

    def parse(self, body: dict[str, Any]) -> Activity:
        # botbuilder's model reads null as absent and takes an empty string as it is; the SDK's
        # pydantic model refuses both in fields it types as non-empty strings (a mention's name,
        # an empty tenant id), which would turn a refusal (403) into a 400. The SDK gets neither;
        # the bot reads the raw JSON anyway.
        return Activity.model_validate(_without_blanks(body))

    async def authenticate(self, activity: Activity, auth_header: str) -> tuple[Any, Mapping[str, Any]]:
        if not auth_header:
            if self._auth_enabled:
                raise Unauthenticated("no token")
            return ClaimsIdentity({}, authentication_type="Anonymous"), {}
        token = auth_header.partition(" ")[2]
        try:
            identity = await JwtTokenValidator(self._config).validate_token(token)
        except PyJWKClientConnectionError as exc:
            raise KeysUnavailable(str(exc)) from exc
        except (PyJWTError, ValueError) as exc:
            raise Unauthenticated(type(exc).__name__) from exc
        except Exception as exc:  # anything else the validator trips on is a token it did not accept
            raise Unauthenticated(type(exc).__name__) from exc
        claims = identity.claims if isinstance(identity.claims, dict) else {}
        if claims.get("serviceurl") != activity.service_url:
            raise Unauthenticated("the token names another service URL")
        await self._endorsements.check(token, activity.channel_id)
        return identity, claims

    async def run_turn(self, identity: Any, activity: Activity, turn: TurnBody) -> None:
        async def logic(turn_context: TurnContext) -> None:
            async def send_text(text: str, thread: str | None) -> None:
                message = MessageFactory.text(text)
                if thread is None:
                    await turn_context.send_activity(message)
                    return
                # Answer the message inside another thread of the channel: its reference, with
                # the thread for conversation.
                incoming = turn_context.activity
                reference = incoming.get_conversation_reference()
                tenant = incoming.conversation.tenant_id if incoming.conversation else None
                reference.conversation = ConversationAccount(
                    id=thread, is_group=True, conversation_type="channel", tenant_id=tenant
                )
                message.apply_conversation_reference(reference)
                await turn_context.adapter.send_activities(turn_context, [message])

            await turn(send_text)

        await self._adapter.process_activity(identity, activity, logic)


class Endorsements:
    """The Bot Framework's check the Agents SDK leaves out: the key that signed a channel's token
    must be endorsed for that channel (``endorsements`` of the key in the signing key set), so a
    key the Bot Framework publishes for another channel cannot speak for Teams.

    The key set is read from where the SDK reads it, in a worker thread, once a day, and again
    (at most once a minute) when a token names a key it does not hold yet."""

    REFRESH_SECONDS = 24 * 3600.0
    RETRY_SECONDS = 60.0

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._sets: dict[str, tuple[float, dict[str, list[str]]]] = {}
        self._lock = asyncio.Lock()

    async def check(self, token: str, channel_id: str | None) -> None:
        """Raise :class:`Unauthenticated` unless the token's key is endorsed for ``channel_id``."""
        kid = get_unverified_header(token).get("kid")
        issuer = decode(token, options={"verify_signature": False}).get("iss")
        # The SDK's own table of Bot Framework key URLs (a private module: no public accessor);
        # the edge lets only Bot Framework-issued tokens this far.
        uri = _entra_issuers.BOTFRAMEWORK_JWKS_URIS.get(issuer) if isinstance(issuer, str) else None
        if uri is None or not isinstance(kid, str):
            raise Unauthenticated("no Bot Framework signing key set for the token")
        endorsed = await self._endorsements(uri, kid)
        if not channel_id or channel_id not in endorsed:
            raise Unauthenticated("the signing key is not endorsed for this channel")

    async def _endorsements(self, uri: str, kid: str) -> list[str]:
        async with self._lock:
            now = self._monotonic()
            fetched_at, keys = self._sets.get(uri, (-math.inf, {}))
            stale = now - fetched_at >= self.REFRESH_SECONDS
            if stale or (kid not in keys and now - fetched_at >= self.RETRY_SECONDS):
                try:
                    data = await asyncio.to_thread(PyJWKClient(uri, cache_jwk_set=False).fetch_data)
                except (PyJWKClientError, ValueError) as exc:  # unreachable, or not a key set (JSON)
                    raise KeysUnavailable(str(exc)) from exc
                keys = _endorsements_by_kid(data)
                self._sets[uri] = (now, keys)
        return keys.get(kid, [])


def _endorsements_by_kid(data: Any) -> dict[str, list[str]]:
    keys = data.get("keys") if isinstance(data, dict) else None
    found: dict[str, list[str]] = {}
    for key in keys if isinstance(keys, list) else []:
        if isinstance(key, dict) and isinstance(key.get("kid"), str):
            endorsements = key.get("endorsements")
            listed = endorsements if isinstance(endorsements, list) else []
            found[key["kid"]] = [e for e in listed if isinstance(e, str)]
    return found


def _without_blanks(value: Any) -> Any:
    """``value`` with every ``null`` or ``""`` member of an object left out, at any depth."""
    if isinstance(value, dict):
        return {key: _without_blanks(item) for key, item in value.items() if item is not None and item != ""}
    if isinstance(value, list):
        return [_without_blanks(item) for item in value]
    return value


class AgentsTransport:
    """The Teams transport on the Microsoft 365 Agents SDK (``TEAMS_SDK=agents``)."""

    def __init__(self, settings: Settings) -> None:
        adapter = build_adapter(settings)
        self.inbound = AgentsInbound(adapter, settings)
        self.messenger = AgentsMessenger(adapter, settings.microsoft_app_id)
