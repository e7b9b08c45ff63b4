"""Inbound authentication: with an app id set, only correctly signed channel tokens get in."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from botframework.connector.auth import ChannelValidation, JwtTokenExtractor
from microsoft_agents.hosting.core.authorization import _entra_issuers
from microsoft_agents.hosting.core.authorization.jwt import JwtTokenValidator

from bot.config.settings import Settings
from tests.conftest import RESPONDER, Clock
from tests.support.botauth import ISSUER, ChannelKeys, new_key
from tests.support.harness import BotHarness, invoke_activity

APP_ID = "0d5e3c4b-1f2a-4b6c-8d7e-9f0a1b2c3d4e"
SERVICE_URL = "https://smba.trafficmanager.net/amer/"


@pytest.fixture
def channel_keys() -> Iterator[ChannelKeys]:
    """The Bot Framework's signing keys on loopback, for both SDKs: botbuilder reads the OpenID
    metadata, the Agents SDK the keys themselves (its table of Bot Framework key URLs)."""
    keys = ChannelKeys()
    keys.start()
    previous = ChannelValidation.open_id_metadata_endpoint
    ChannelValidation.open_id_metadata_endpoint = keys.metadata_url
    JwtTokenExtractor.metadataCache.clear()
    agents_keys = _entra_issuers.BOTFRAMEWORK_JWKS_URIS
    previous_agents = agents_keys[ISSUER]
    agents_keys[ISSUER] = f"{keys.url}/keys"
    JwtTokenValidator._jwk_client_manager._cache.clear()
    yield keys
    ChannelValidation.open_id_metadata_endpoint = previous
    JwtTokenExtractor.metadataCache.clear()
    agents_keys[ISSUER] = previous_agents
    JwtTokenValidator._jwk_client_manager._cache.clear()
    keys.stop()


@pytest.fixture
async def secured_bot(make_settings: Callable[..., Settings], clock: Clock) -> AsyncIterator[BotHarness]:
    settings = make_settings(
        sandbox_mode=False,
        microsoft_app_id=APP_ID,
        microsoft_app_password="not-used-by-inbound-validation",
        microsoft_app_type="MultiTenant",
        audit_hmac_key="auth-test audit key of at least thirty-two characters",
    )
    harness = BotHarness(settings, clock)
    await harness.start()
    yield harness
    await harness.stop()


def _probe() -> dict[str, object]:
    # An invoke about a case that does not exist: processed, it answers 404 in the body and
    # sends nothing outbound (outbound would need a real Bot Framework token).
    return invoke_activity(
        SERVICE_URL,
        "19:incident@thread.tacv2;messageid=1",
        user_object_id=RESPONDER["id"],
        user_name=RESPONDER["name"],
        verb="disableAccount",
        data={"caseId": "no-such-case", "cardVersion": 1, "reason": "probe"},
    )


async def test_a_correctly_signed_token_is_processed(
    secured_bot: BotHarness, channel_keys: ChannelKeys
) -> None:
    token = channel_keys.token(audience=APP_ID, service_url=SERVICE_URL)
    status, body = await secured_bot.post(_probe(), headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    assert body["statusCode"] == 404
    assert "does not exist" in body["value"]["message"]


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda keys: None, id="no token"),
        pytest.param(
            lambda keys: keys.token(audience=APP_ID, service_url=SERVICE_URL, key=new_key()), id="other key"
        ),
        pytest.param(
            lambda keys: keys.token(audience=APP_ID, service_url=SERVICE_URL, expires_in=-3600), id="expired"
        ),
        pytest.param(
            lambda keys: keys.token(audience=APP_ID, service_url=SERVICE_URL, kid="unknown"), id="unknown kid"
        ),
        pytest.param(
            lambda keys: keys.token(audience="someone-else", service_url=SERVICE_URL), id="wrong audience"
        ),
        pytest.param(
            lambda keys: keys.token(audience=APP_ID, service_url="https://evil.example/"),
            id="other service url",
        ),
        pytest.param(
            lambda keys: keys.token(audience=APP_ID, service_url=SERVICE_URL, issuer="https://evil.example"),
            id="wrong issuer",
        ),
    ],
)
async def test_forged_or_broken_tokens_get_401(
    secured_bot: BotHarness,
    channel_keys: ChannelKeys,
    forge: Callable[[ChannelKeys], str | None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = forge(channel_keys)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with caplog.at_level(logging.WARNING):
        status, body = await secured_bot.post(_probe(), headers=headers)
    assert status == 401
    assert body == {
        "error": {
            "code": "Unauthorized",
            "message": "The request's Bot Framework token is missing or invalid.",
        }
    }
    assert not any(record.exc_info for record in caplog.records), "one short log line, no stack trace"
    if token:
        assert token not in caplog.text


async def test_a_key_endorsed_for_another_channel_cannot_speak_for_teams(
    secured_bot: BotHarness, channel_keys: ChannelKeys
) -> None:
    # A genuine Bot Framework key, published for another channel only: its token says msteams.
    channel_keys.endorsements = ["webchat"]
    token = channel_keys.token(audience=APP_ID, service_url=SERVICE_URL)
    status, body = await secured_bot.post(_probe(), headers={"Authorization": f"Bearer {token}"})
    assert status == 401
    assert body["error"]["code"] == "Unauthorized"


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"id": "x"}', "application/json", 400),
        (b"type=message", "application/x-www-form-urlencoded", 415),
        (b'{"type": "message", "pad": "' + b"x" * 300_000 + b'"}', "application/json", 413),
    ],
)
async def test_malformed_requests_get_a_clear_answer(
    bot: BotHarness, data: bytes, content_type: str, status: int
) -> None:
    got, body = await bot.post_raw(data, content_type)
    assert got == status
    assert body["error"]["message"]
