"""The tenant is pinned: activities from any other tenant (or naming none) are refused first.

A click, a message or an installation from another tenant runs nothing, sends nothing, is
logged once and audited; the channel reference is written only from the configured tenant's
activities naming the configured channel, and a change of its service URL is audited.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.config.settings import Settings, load_settings
from bot.errors import ConfigError
from bot.web.app import STORE
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, Clock
from tests.scenario.test_auth import APP_ID, SERVICE_URL
from tests.scenario.test_auth import channel_keys as channel_keys
from tests.support.botauth import ChannelKeys
from tests.support.connector import RecordingConnector
from tests.support.harness import (
    BOT_ID,
    CHANNEL_ID,
    TENANT_ID,
    BotHarness,
    card_action,
    install_activity,
    invoke_activity,
)
from tests.support.snapshot import stored_state

OTHER_TENANT = "99999999-8888-4777-8666-555555555555"
LEE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"
REFUSED = "This bot serves another organisation's Teams; nothing was done."


def with_tenant(activity: dict[str, Any], channel_data: Any = ..., conversation: Any = ...) -> dict[str, Any]:
    """``activity`` naming other tenants (``None`` removes the field)."""
    changed = copy.deepcopy(activity)
    if channel_data is not ...:
        if channel_data is None:
            changed["channelData"].pop("tenant", None)
        else:
            changed["channelData"]["tenant"] = {"id": channel_data}
    if conversation is not ...:
        if conversation is None:
            changed["conversation"].pop("tenantId", None)
        else:
            changed["conversation"]["tenantId"] = conversation
    return changed


def message(service_url: str, text: str, person: dict[str, str] = RESPONDER) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg-tenant",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "text": text,
        "from": {"id": f"29:{person['id']}", "aadObjectId": person["id"], "name": person["name"]},
        "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
        "conversation": {"id": "a:personal", "conversationType": "personal", "tenantId": TENANT_ID},
        "channelData": {"tenant": {"id": TENANT_ID}},
    }


async def open_channel(bot: BotHarness, connector: RecordingConnector) -> dict[str, Any]:
    """Install, poll, and return a Disable click on Lee Gu's card as Alex (an approver)."""
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    await bot.poller.poll_once()
    await bot.service.drain()
    post = next(p for p in connector.of_kind("create") if "Lee Gu" in p.text)
    data = dict(card_action(post.card or {}, "disableAccount")["data"], reason="impossible travel")
    return invoke_activity(
        connector.service_url,
        post.conversation_id,
        user_object_id=RESPONDER["id"],
        user_name=RESPONDER["name"],
        verb="disableAccount",
        data=data,
    )


def refusals(events: list[Any]) -> list[Any]:
    return [e for e in events if e.kind == "activity.refused_tenant"]


@pytest.mark.parametrize(
    ("channel_data", "conversation"),
    [
        pytest.param(OTHER_TENANT, OTHER_TENANT, id="another tenant"),
        pytest.param(None, None, id="no tenant"),
        pytest.param(OTHER_TENANT, TENANT_ID, id="channelData names another tenant"),
        pytest.param(TENANT_ID, OTHER_TENANT, id="conversation names another tenant"),
        pytest.param(None, OTHER_TENANT, id="only the conversation names one, another"),
        pytest.param("", "", id="empty tenant ids"),
    ],
)
async def test_a_click_from_another_tenant_by_an_approvers_object_id_runs_nothing(
    bot: BotHarness,
    connector: RecordingConnector,
    tenant: SandboxTenant,
    channel_data: Any,
    conversation: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    click = await open_channel(bot, connector)
    store = bot.app[STORE]
    before = await stored_state(store)
    calls, graph = len(connector.calls), len(tenant.requests)
    with caplog.at_level(logging.INFO):
        status, answer = await bot.post(with_tenant(click, channel_data, conversation))
        await bot.service.drain()
    assert status == 200
    assert answer["statusCode"] == 403 and answer["value"]["message"] == REFUSED
    assert tenant.user(LEE)["accountEnabled"] is True
    assert len(tenant.requests) == graph, "no Graph call"
    assert len(connector.calls) == calls, "nothing sent to Teams"
    after = await stored_state(store)
    assert after["audit"][:-1] == before["audit"], "only the refusal is recorded"
    assert {k: v for k, v in after.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"
    }
    (event,) = refusals(await store.list_audit())
    assert event.actor_id != RESPONDER["id"], "never recorded as the approver it resembles"
    assert event.actor_id.endswith(f"/{RESPONDER['id']}")
    assert event.payload["activity"]["object_id"] == RESPONDER["id"]
    lines = [r for r in caplog.records if "refused invoke activity" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and not lines[0].exc_info


async def test_the_same_click_from_the_configured_tenant_runs(
    bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant
) -> None:
    click = await open_channel(bot, connector)
    # Tenant ids compare case-insensitively; one field naming the tenant is enough.
    status, answer = await bot.post(with_tenant(click, TENANT_ID.upper(), None))
    await bot.service.drain()
    assert status == 200 and answer["statusCode"] == 200
    assert tenant.user(LEE)["accountEnabled"] is False
    assert refusals(await bot.app[STORE].list_audit()) == []


async def test_a_message_from_another_tenant_gets_403_and_no_reply(
    bot: BotHarness, connector: RecordingConnector
) -> None:
    await open_channel(bot, connector)
    calls = len(connector.calls)
    for activity in (
        with_tenant(message(connector.service_url, "pending"), OTHER_TENANT, OTHER_TENANT),
        with_tenant(message(connector.service_url, "contain lee.gu@contoso.com"), None, None),
    ):
        status, body = await bot.post(activity)
        await bot.service.drain()
        assert status == 403
        assert body == {"error": {"code": "Forbidden", "message": REFUSED}}
    assert len(connector.calls) == calls, "no reply goes to another tenant"
    assert len(refusals(await bot.app[STORE].list_audit())) == 2
    # The same message from the configured tenant is answered.
    status, _ = await bot.post(message(connector.service_url, "pending"))
    await bot.service.drain()
    assert status in (200, 201) and len(connector.calls) == calls + 1


async def test_an_installation_from_another_tenant_never_becomes_the_incident_channel(
    bot: BotHarness, connector: RecordingConnector
) -> None:
    store = bot.app[STORE]
    forged = with_tenant(install_activity("https://evil.example/connector/"), OTHER_TENANT, OTHER_TENANT)
    status, body = await bot.post(forged)
    await bot.service.drain()
    assert status == 403 and body["error"]["message"] == REFUSED
    assert await store.get_channel() is None
    await bot.poller.poll_once()
    await bot.service.drain()
    assert connector.calls == [], "no card goes anywhere"
    # The real installation registers the channel; a later forged one does not move it.
    await bot.post(install_activity(connector.service_url))
    await bot.service.drain()
    channel = await store.get_channel()
    assert channel is not None and channel.service_url == connector.service_url
    assert channel.tenant_id == TENANT_ID
    status, _ = await bot.post(forged)
    assert status == 403
    assert await store.get_channel() == channel
    kinds = [e.kind for e in await store.list_audit()]
    assert kinds.count("activity.refused_tenant") == 2 and kinds.count("channel.registered") == 1


async def test_a_new_service_url_for_the_channel_is_audited(
    bot: BotHarness, connector: RecordingConnector
) -> None:
    store = bot.app[STORE]
    await bot.post(install_activity(connector.service_url))
    await bot.post(install_activity(connector.service_url))  # the same reference: nothing new
    moved = f"{connector.service_url}moved/"
    await bot.post(install_activity(moved))
    await bot.service.drain()
    channel = await store.get_channel()
    assert channel is not None and channel.service_url == moved
    events = [e for e in await store.list_audit() if e.kind.startswith("channel.")]
    assert [e.kind for e in events] == ["channel.registered", "channel.service_url_changed"]
    assert events[1].payload["previous_service_url"] == connector.service_url
    assert events[1].payload["service_url"] == moved
    assert events[1].actor_id == "admin-object-id"
    # Another channel of the same tenant is ignored.
    await bot.post(install_activity("https://elsewhere.example/", channel_id="19:other@thread.tacv2"))
    assert await store.get_channel() == channel


@pytest.fixture
async def secured_bot(make_settings: Callable[..., Settings], clock: Clock) -> AsyncIterator[BotHarness]:
    settings = make_settings(
        sandbox_mode=False,
        microsoft_app_id=APP_ID,
        microsoft_app_password="not-used-by-inbound-validation",
        microsoft_app_type="SingleTenant",
        microsoft_app_tenant_id=TENANT_ID,
        audit_hmac_key="tenant-test audit key of at least thirty-two characters",
    )
    harness = BotHarness(settings, clock)
    await harness.start()
    yield harness
    await harness.stop()


async def test_a_validly_signed_activity_from_another_tenant_is_refused(
    secured_bot: BotHarness, channel_keys: ChannelKeys
) -> None:
    token = channel_keys.token(audience=APP_ID, service_url=SERVICE_URL)
    headers = {"Authorization": f"Bearer {token}"}
    click = invoke_activity(
        SERVICE_URL,
        f"{CHANNEL_ID};messageid=1",
        user_object_id=RESPONDER["id"],
        user_name=RESPONDER["name"],
        verb="disableAccount",
        data={"caseId": "no-such-case", "cardVersion": 1, "reason": "probe"},
    )
    status, answer = await secured_bot.post(with_tenant(click, OTHER_TENANT, OTHER_TENANT), headers=headers)
    assert status == 200 and answer["statusCode"] == 403
    status, answer = await secured_bot.post(click, headers=headers)
    assert status == 200 and answer["statusCode"] == 404, "the configured tenant gets through"
    assert len(refusals(await secured_bot.app[STORE].list_audit())) == 1


async def test_an_unauthenticated_activity_from_another_tenant_is_401_and_not_audited(
    secured_bot: BotHarness,
) -> None:
    forged = with_tenant(install_activity(SERVICE_URL), OTHER_TENANT, OTHER_TENANT)
    status, _ = await secured_bot.post(forged)
    assert status == 401
    assert await secured_bot.app[STORE].list_audit() == [], "only authenticated activities reach the audit"


# -- which setting names the tenant -------------------------------------------------------------

BASE: dict[str, Any] = {
    "graph_client_id": "client",
    "graph_client_secret": "secret",
    "teams_channel_id": CHANNEL_ID,
}


def test_the_tenant_is_microsoft_app_tenant_id_else_graph_tenant_id() -> None:
    graph_only = load_settings(sandbox_mode=True, graph_tenant_id=TENANT_ID.upper(), **BASE)
    assert graph_only.tenant_id == TENANT_ID
    both = load_settings(
        sandbox_mode=True, graph_tenant_id=TENANT_ID, microsoft_app_tenant_id=TENANT_ID.upper(), **BASE
    )
    assert both.tenant_id == TENANT_ID


def test_two_settings_naming_different_tenants_stop_the_bot() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            sandbox_mode=True, graph_tenant_id=TENANT_ID, microsoft_app_tenant_id=OTHER_TENANT, **BASE
        )
    assert raised.value.variable == "MicrosoftAppTenantId"
    assert "GRAPH_TENANT_ID" in raised.value.message and OTHER_TENANT in raised.value.message


def test_with_authentication_on_a_tenant_that_is_not_a_directory_id_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        load_settings(
            microsoft_app_id=APP_ID,
            microsoft_app_password="p",
            audit_hmac_key="tenant-test audit key of at least thirty-two characters",
            graph_tenant_id="contoso.onmicrosoft.com",
            **BASE,
        )
    assert "GRAPH_TENANT_ID is 'contoso.onmicrosoft.com', not a directory (tenant) id" in caplog.text


async def test_only_an_accepted_activity_refreshes_the_channel_reference(
    bot: BotHarness, connector: RecordingConnector
) -> None:
    click = await open_channel(bot, connector)
    store = bot.app[STORE]
    channel = await store.get_channel()
    moved = f"{connector.service_url}moved/"
    declined = dict(click, serviceUrl=moved, value={"action": {"type": "Action.Execute", "verb": "refresh"}})
    status, answer = await bot.post(declined)
    assert status == 200 and answer["statusCode"] == 400, "a click naming no case is declined"
    assert await store.get_channel() == channel, "a declined click writes nothing"
    refresh = dict(click, serviceUrl=moved)
    refresh["value"] = {
        "action": {"type": "Action.Execute", "verb": "refresh", "data": click["value"]["action"]["data"]}
    }
    status, answer = await bot.post(refresh)
    await bot.service.drain()
    assert status == 200 and answer["statusCode"] == 200
    stored = await store.get_channel()
    assert stored is not None and stored.service_url == moved
    assert [e.kind for e in await store.list_audit() if e.kind.startswith("channel.")] == [
        "channel.registered",
        "channel.service_url_changed",
    ]
