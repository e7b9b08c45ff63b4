"""``remediation-bot serve`` with Bot Framework authentication ON, its Microsoft endpoints on loopback.

    python -m tests.bench.secured serve      # the bot, exactly as ``remediation-bot serve`` runs it
    python -m tests.bench.secured echo       # a bare botbuilder CloudAdapter echo bot (the baseline)

With ``MicrosoftAppId`` set, botbuilder checks every inbound token against the Bot Framework's
OpenID metadata and signing keys, and fetches a token from Entra ID before every outbound Bot
Connector call. A benchmark cannot reach Microsoft, so before the bot starts this module points
those two third-party endpoints at stand-ins, the same way tests/scenario/test_auth.py does in
process (nothing of the bot's own code is replaced):

- ``BENCH_OPENID_METADATA_URL``: :class:`tests.support.botauth.ChannelKeys`' metadata, whose key
  signs the benchmark's channel tokens; validation is botbuilder's own, signature and all.
- ``BENCH_TOKEN_AUTHORITY`` and ``BENCH_TOKEN_CA``: the sandbox tenant's authority, where msal
  (botbuilder's, for the outbound token) gets a real client-credentials token over TLS.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _point_botbuilder_at_loopback() -> None:
    import msal
    import requests
    from botframework.connector.auth import ChannelValidation, JwtTokenExtractor
    from botframework.connector.auth import microsoft_app_credentials as credentials

    ChannelValidation.open_id_metadata_endpoint = os.environ["BENCH_OPENID_METADATA_URL"]
    JwtTokenExtractor.metadataCache.clear()
    authority = os.environ.get("BENCH_TOKEN_AUTHORITY", "")
    ca = os.environ.get("BENCH_TOKEN_CA", "")
    if not authority:
        _point_agents_at_loopback(None)
        return  # nothing outbound (the echo bot answers in the invoke response only)

    def local_msal(client_id: str, client_credential: Any, authority_url: str = "", **_: Any) -> Any:
        # botbuilder asks for https://login.microsoftonline.com/<tenant>; the sandbox is that tenant.
        session = requests.Session()
        session.verify = ca
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify otherwise
        return msal.ConfidentialClientApplication(
            client_id,
            client_credential=client_credential,
            authority=authority,
            instance_discovery=False,
            http_client=session,
        )

    def construct(client_id: str, client_credential: Any = None, authority: str = "", **rest: Any) -> Any:
        return local_msal(client_id, client_credential, authority, **rest)

    # Re-pointing botbuilder's module-level msal constructor at the loopback authority: the module
    # is untyped to mypy, so assigning an attribute it does not declare needs the ignore.
    credentials.ConfidentialClientApplication = construct  # type: ignore[attr-defined]  # botframework declares no such attribute; the benchmark swaps the class it uses

    class LocalApplication(msal.ConfidentialClientApplication):  # type: ignore[misc]  # msal has no type stubs
        """The Agents SDK's msal application (``MsalAuth``), at the loopback authority."""

        def __init__(self, client_id: str, client_credential: Any = None, **_: Any) -> None:
            session = requests.Session()
            session.verify = ca
            session.trust_env = False
            super().__init__(
                client_id,
                client_credential=client_credential,
                authority=authority,
                instance_discovery=False,
                http_client=session,
            )

    _point_agents_at_loopback(LocalApplication)


def _point_agents_at_loopback(application: type | None) -> None:
    """The same two endpoints for the Agents SDK (``TEAMS_SDK=agents``): its table of the Bot
    Framework's signing-key URLs, and the msal application class its ``MsalAuth`` builds."""
    from microsoft_agents.authentication.msal import msal_auth
    from microsoft_agents.hosting.core.authorization import _entra_issuers

    metadata = os.environ["BENCH_OPENID_METADATA_URL"]
    keys = metadata.removesuffix("/.well-known/openidconfiguration") + "/keys"
    _entra_issuers.BOTFRAMEWORK_JWKS_URIS["https://api.botframework.com"] = keys
    if application is not None:
        # The SDK module imports the class under its name without re-exporting it.
        msal_auth.ConfidentialClientApplication = application  # type: ignore[attr-defined]  # msal has no type stubs; the benchmark swaps the class msal_auth uses


def _variable(name: str, default: str | None = None) -> str:
    """An environment variable by the Bot Framework's mixed-case name (required without ``default``)."""
    value = os.environ.get(name, default)
    if value is None:
        raise KeyError(name)
    return value


def _echo() -> int:
    """The baseline: botbuilder's CloudAdapter answering each card click with a card, nothing else."""
    from aiohttp import web
    from botbuilder.core import ActivityHandler, InvokeResponse, TurnContext
    from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
    from botbuilder.schema import AdaptiveCardInvokeResponse

    class Config:
        # The Bot Framework's own variable names, as the bot reads them.
        APP_ID = _variable("MicrosoftAppId")
        APP_PASSWORD = _variable("MicrosoftAppPassword")
        APP_TYPE = _variable("MicrosoftAppType", "SingleTenant")
        APP_TENANTID = _variable("MicrosoftAppTenantId", "")

    class Echo(ActivityHandler):  # type: ignore[misc]
        async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
            data = ((turn_context.activity.value or {}).get("action") or {}).get("data") or {}
            card = {
                "type": "AdaptiveCard",
                "version": "1.5",
                "body": [{"type": "TextBlock", "text": f"echo {sorted(data)}", "wrap": True}],
            }
            return InvokeResponse(
                status=200,
                body=AdaptiveCardInvokeResponse(
                    status_code=200, type="application/vnd.microsoft.card.adaptive", value=card
                ),
            )

    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(Config()))
    bot = Echo()

    async def messages(request: web.Request) -> web.StreamResponse:
        response = await adapter.process(request, bot)
        return response if response is not None else web.Response(status=201)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
    return 0


def main(argv: list[str]) -> int:
    _point_botbuilder_at_loopback()
    if argv[:1] == ["echo"]:
        return _echo()
    from bot.cli.main import main as cli

    result: int = cli(["serve"])
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
