"""The bot's outbound Bot Connector token, fetched off the event loop.

botbuilder 4.17.1 builds fresh ``MicrosoftAppCredentials`` for every turn (each with a new msal
application and an empty token cache), and msrest asks them for a token inside
``signed_session``, synchronously, on the event loop, right before each Bot Connector request:
every card, card update and thread reply held the whole loop while msal fetched a token from
Entra ID over HTTPS.

:class:`OffLoopCredentialsFactory` sits where botbuilder asks for those credentials (its
``ServiceClientCredentialsFactory``, which botbuilder awaits). It keeps one long-lived set of
credentials per app id and audience, asks them for the token in a worker thread of its own (not
the default executor, where botbuilder's requests may all be waiting on Teams), and hands
botbuilder credentials that carry the token in hand, so that ``signed_session`` does no I/O.
msal answers from its own cache until the token is within five minutes of expiry, so a token it
gave is good for at least five minutes: it is used for :data:`USABLE_SECONDS` at most and
refreshed in the background after :data:`REFRESH_SECONDS`, so that a turn seldom waits for
Entra ID at all and never blocks the loop on it.

A token that could not be fetched fails the send that needs it, as before (botbuilder's
``PermissionError`` or the transport's error, raised from ``signed_session``); a turn that sends
nothing is not held up by it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botframework.connector.auth import AppCredentials, ServiceClientCredentialsFactory
from msrest.authentication import Authentication

log = logging.getLogger(__name__)

# msal hands out tokens with at least five minutes left (it treats the rest as expired).
USABLE_SECONDS = 240.0
REFRESH_SECONDS = 60.0


@dataclass
class _Held:
    """The token of one app id and audience, and the fetch under way, if any."""

    source: AppCredentials
    token: str = ""
    fetched_at: float = float("-inf")
    fetching: asyncio.Task[str] | None = None


class OffLoopCredentialsFactory(ServiceClientCredentialsFactory):
    """botbuilder's credentials factory, with the token fetched in a worker thread beforehand."""

    def __init__(
        self, inner: ServiceClientCredentialsFactory, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._monotonic = monotonic
        self._held: dict[tuple[str, str, str], _Held] = {}
        # A thread of its own: botbuilder's Bot Connector requests block the default executor's.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bot-connector-token")

    async def is_valid_app_id(self, app_id: str) -> bool:
        return bool(await self._inner.is_valid_app_id(app_id))

    async def is_authentication_disabled(self) -> bool:
        return bool(await self._inner.is_authentication_disabled())

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> Authentication:
        credentials: Authentication = await self._inner.create_credentials(
            app_id, oauth_scope, login_endpoint, validate_authority
        )
        if not isinstance(credentials, AppCredentials) or not credentials.microsoft_app_id:
            return credentials  # authentication off: botbuilder sends no token
        key = (app_id, oauth_scope or "", login_endpoint or "")
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held(source=credentials)
        try:
            token = await self._token(held)
        except Exception as exc:  # raised by the send that needs it, as botbuilder would
            log.warning("Bot Connector token: could not be fetched (%s)", type(exc).__name__)
            return TokenInHand(credentials, error=exc)
        return TokenInHand(credentials, token=token)

    async def _token(self, held: _Held) -> str:
        age = self._monotonic() - held.fetched_at
        if held.token and age < USABLE_SECONDS:
            if age >= REFRESH_SECONDS and held.fetching is None:
                self._fetch(held)  # in the background: this turn uses the token in hand
            return held.token
        fetching = held.fetching or self._fetch(held)
        # Shielded: a turn given up on does not cancel the fetch the next turns wait for.
        return await asyncio.shield(fetching)

    def _fetch(self, held: _Held) -> asyncio.Task[str]:
        async def fetch() -> str:
            try:
                loop = asyncio.get_running_loop()
                token: str = await loop.run_in_executor(self._thread, held.source.get_access_token)
            finally:
                held.fetching = None
            held.token, held.fetched_at = token, self._monotonic()
            return token

        task = asyncio.get_running_loop().create_task(fetch())
        # A background refresh that fails is retried by the next turn; its error is not lost.
        task.add_done_callback(_log_failure)
        held.fetching = task
        return task


def _log_failure(task: asyncio.Task[str]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("Bot Connector token refresh failed: %r", task.exception())


class TokenInHand(AppCredentials):
    """Credentials whose token was fetched before the request: ``signed_session`` does no I/O."""

    def __init__(self, source: AppCredentials, *, token: str = "", error: Exception | None = None) -> None:
        super().__init__(
            app_id=source.microsoft_app_id, channel_auth_tenant=source.tenant, oauth_scope=source.oauth_scope
        )
        self.oauth_endpoint = source.oauth_endpoint
        self._token = token
        self._error = error

    def get_access_token(self, force_refresh: bool = False) -> str:
        if self._error is not None:
            raise self._error
        return self._token
