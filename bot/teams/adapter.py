"""The Teams transport on botbuilder: its CloudAdapter, inbound and outbound.

Inbound JWT validation is botbuilder's; this module makes its failures answer 401 instead of
escaping as 500s (a forged token signed by another key, an expired token or an unknown key id
raise from inside ``process_activity`` on botbuilder 4.17.1). The request's checks and answers
are :mod:`bot.teams.edge`'s, shared with the Agents SDK transport.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botbuilder.core import MessageFactory, TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import Activity, ConversationAccount
from msrest.universal_http.requests import ClientRetryPolicy

from bot.config.settings import Settings
from bot.teams.edge import KeysUnavailable, TurnBody, Unauthenticated, log_turn_error
from bot.teams.messenger import TeamsMessenger
from bot.teams.tokens import OffLoopCredentialsFactory

log = logging.getLogger(__name__)


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

    adapter.on_turn_error = log_turn_error
    return adapter


class BotbuilderInbound:
    """The inbound half of the botbuilder transport (:class:`bot.teams.edge.Inbound`)."""

    def __init__(self, adapter: CloudAdapter) -> None:
        self._adapter = adapter

    def parse(self, body: dict[str, Any]) -> Activity:
        activity: Activity = Activity().deserialize(body)
        return activity

    async def authenticate(self, activity: Activity, auth_header: str) -> tuple[Any, Mapping[str, Any]]:
        try:
            authenticated = await self._adapter.bot_framework_authentication.authenticate_request(
                activity, auth_header
            )
        except PermissionError as exc:
            raise Unauthenticated("no valid token") from exc
        except OSError as exc:
            # requests' errors are OSErrors: the signing keys could not be fetched.
            raise KeysUnavailable(str(exc)) from exc
        except Exception as exc:
            # botframework raises bare Exceptions, jwt errors, IndexError, KeyError... for bad tokens.
            raise Unauthenticated(type(exc).__name__) from exc
        claims = getattr(authenticated.claims_identity, "claims", None)
        return authenticated, claims if isinstance(claims, dict) else {}

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
                reference = TurnContext.get_conversation_reference(incoming)
                tenant = incoming.conversation.tenant_id if incoming.conversation else None
                reference.conversation = ConversationAccount(
                    id=thread, is_group=True, conversation_type="channel", tenant_id=tenant
                )
                TurnContext.apply_conversation_reference(message, reference)
                await turn_context.adapter.send_activities(turn_context, [message])

            await turn(send_text)

        # The invoke answer botbuilder builds (501: nobody set one) is not used: the edge answers.
        await self._adapter.process_activity(identity, activity, logic)


class BotbuilderTransport:
    """The Teams transport on botbuilder (``TEAMS_SDK=botbuilder``, the default)."""

    def __init__(self, settings: Settings) -> None:
        adapter = build_adapter(settings)
        self.inbound = BotbuilderInbound(adapter)
        self.messenger = TeamsMessenger(adapter, settings.microsoft_app_id)
