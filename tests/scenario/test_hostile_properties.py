"""Property tests through the real app: whatever arrives, no 5xx and no partial write.

Hypothesis generates activities (clicks on real cards, chat messages, installations) and pushed
alert batches, then bends them: any field replaced by any JSON value (lone surrogates and NULs
included), removed, or the body swapped for arbitrary bytes. Every answer must be below 500.
A refused request (4xx) must leave the store exactly as it was, except that an activity refused
for its tenant (403) adds exactly one ``activity.refused_tenant`` audit event; a refused push
stores none of its alerts, an accepted one stores them all.
"""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.config.settings import Settings
from bot.web.app import STORE
from bot.web.push import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.conftest import OUTSIDER, RESPONDER, SECOND_RESPONDER, Clock
from tests.support.connector import RecordingConnector
from tests.support.harness import (
    BOT_ID,
    TENANT_ID,
    BotHarness,
    card_action,
    install_activity,
    invoke_activity,
)
from tests.support.snapshot import stored_state

SECRET = "property-tests-push-secret-0123456789abcdef"
KNOWN_UPNS = ["lee.gu@contoso.com", "adele.vance@contoso.com", "breakglass@contoso.com"]
PROPERTY_SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as an attacker writes it: any character, lone surrogates, NUL, markup and brackets; no
# "@", so a generated string never names a user by accident (known UPNs are drawn separately).
_characters = st.one_of(
    st.characters(exclude_characters="@"),
    st.characters(categories=["Cs"]),
    st.sampled_from(["\x00", "\u202e", "<", ">", "[", "{", "\\", '"']),
)
texts = st.one_of(st.text(_characters, max_size=12), st.sampled_from(["<at>Remediation Bot</at>", "<at>"]))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
    | st.sampled_from(["", "invoke", "message", "adaptiveCard/action", "Action.Execute", TENANT_ID]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)

ACTIVITY_PATHS = [
    "type",
    "name",
    "id",
    "serviceUrl",
    "channelId",
    "timestamp",
    "from",
    "from.aadObjectId",
    "from.name",
    "recipient",
    "recipient.id",
    "conversation",
    "conversation.id",
    "conversation.tenantId",
    "conversation.tenantID",
    "channelData",
    "channelData.tenant",
    "channelData.tenant.id",
    "channelData.team",
    "channelData.team.id",
    "channelData.channel",
    "channelData.channel.id",
    "channelData.eventType",
    "value",
    "value.action",
    "value.action.type",
    "value.action.verb",
    "value.action.data",
    "value.action.data.caseId",
    "value.action.data.requestId",
    "value.action.data.cardVersion",
    "value.action.data.reason",
    "text",
    "entities",
    "membersAdded",
    "replyToId",
    "deliveryMode",
]
ALERT_PATHS = [
    "id",
    "title",
    "severity",
    "source",
    "url",
    "createdDateTime",
    "user",
    "user.objectId",
    "user.userPrincipalName",
    "user.displayName",
    "serviceSource",
    "status",
    "lastUpdateDateTime",
    "mitreTechniques",
    "evidence",
    "evidence.0",
    "evidence.0.@odata.type",
    "evidence.0.roles",
    "evidence.0.userAccount",
    "evidence.0.userAccount.userPrincipalName",
    "evidence.0.userAccount.azureAdUserId",
]
DELETE = object()


@st.composite
def edits(draw: st.DrawFn, paths: list[str]) -> list[tuple[str, Any]]:
    """One to three changes: a path and a new value (or DELETE)."""
    count = draw(st.integers(min_value=1, max_value=3))
    return [
        (draw(st.sampled_from(paths)), draw(st.one_of(st.just(DELETE), json_values))) for _ in range(count)
    ]


def apply(document: Any, changes: list[tuple[str, Any]]) -> Any:
    """``document`` with each change applied where its parent exists (else skipped)."""
    result = copy.deepcopy(document)
    for path, value in changes:
        *parents, last = path.split(".")
        node = result
        for name in parents:
            if isinstance(node, dict) and isinstance(node.get(name), dict | list):
                node = node[name]
            elif isinstance(node, list) and name.isdigit() and int(name) < len(node):
                node = node[int(name)]
            else:
                node = None
                break
        if isinstance(node, dict):
            if value is DELETE:
                node.pop(last, None)
            else:
                node[last] = value
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node) and value is not DELETE:
            node[int(last)] = value
    return result


def dumps(document: Any) -> bytes:
    # ensure_ascii writes lone surrogates as \\udXXX escapes, as an attacker's JSON would.
    return json.dumps(document).encode()


class Live:
    """The running bot and its recording connector (with a short repr for Hypothesis' reports)."""

    def __init__(self, bot: BotHarness, connector: RecordingConnector) -> None:
        self.bot = bot
        self.connector = connector
        self.activities = base_activities(connector)

    def __repr__(self) -> str:
        return "Live(bot, connector)"


@pytest.fixture
async def live(
    make_settings: Callable[..., Settings], clock: Clock, connector: RecordingConnector
) -> AsyncIterator[Live]:
    harness = BotHarness(make_settings(push_shared_secret=SECRET), clock)
    await harness.start()
    await harness.post(install_activity(connector.service_url))
    await harness.service.drain()
    await harness.poller.poll_once()
    await harness.service.drain()
    yield Live(harness, connector)
    await harness.stop()


def base_activities(connector: RecordingConnector) -> list[dict[str, Any]]:
    """Well-formed activities to bend: a click on each card, chat messages, an installation."""
    activities: list[dict[str, Any]] = [install_activity(connector.service_url)]
    for post in connector.of_kind("create"):
        for verb in ("disableAccount", "revokeSessions", "refresh"):
            try:
                data = dict(card_action(post.card or {}, verb)["data"], reason="generated")
            except AssertionError:
                continue
            for person in (RESPONDER, SECOND_RESPONDER, OUTSIDER):
                activities.append(
                    invoke_activity(
                        connector.service_url,
                        post.conversation_id,
                        user_object_id=person["id"],
                        user_name=person["name"],
                        verb=verb,
                        data=data,
                    )
                )
    for text in ("help", "pending", "history lee.gu@contoso.com", "<at>Remediation Bot</at> pending"):
        activities.append(
            {
                "type": "message",
                "id": "generated-message",
                "channelId": "msteams",
                "serviceUrl": connector.service_url,
                "text": text,
                "from": {"id": "29:alex", "aadObjectId": RESPONDER["id"], "name": RESPONDER["name"]},
                "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
                "conversation": {"id": "a:personal", "conversationType": "personal", "tenantId": TENANT_ID},
                "channelData": {"tenant": {"id": TENANT_ID}},
                "entities": [
                    {"type": "mention", "text": "<at>Remediation Bot</at>", "mentioned": {"id": BOT_ID}}
                ],
            }
        )
    return activities


@PROPERTY_SETTINGS
@given(
    pick=st.integers(min_value=0, max_value=10_000),
    changes=edits(ACTIVITY_PATHS),
    raw=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=64)),
)
async def test_no_generated_activity_gets_a_5xx_or_writes_when_refused(
    live: Live, pick: int, changes: list[tuple[str, Any]], raw: bytes | None
) -> None:
    live_bot = live.bot
    body = raw if raw is not None else dumps(apply(live.activities[pick % len(live.activities)], changes))
    store = live_bot.app[STORE]
    await live_bot.service.drain()
    before = await stored_state(store)
    status, answer = await live_bot.post_raw(body, "application/json")
    await live_bot.service.drain()
    after = await stored_state(store)
    event(f"HTTP {status}")
    assert status < 500, answer
    if isinstance(answer, dict) and answer.get("type") == "application/vnd.microsoft.error":
        status = answer["statusCode"]  # a card action's refusal travels in the body
        assert status < 500, answer
    if status == 403:
        assert {k: v for k, v in after.items() if k != "audit"} == {
            k: v for k, v in before.items() if k != "audit"
        }
        assert after["audit"][: len(before["audit"])] == before["audit"]
        assert [kind for _, kind in after["audit"][len(before["audit"]) :]] == ["activity.refused_tenant"]
    elif 400 <= status < 500 and not (isinstance(answer, dict) and "card" in str(answer.get("type"))):
        assert after == before, f"a refused activity changed the store ({status}: {answer})"


def base_alerts() -> list[dict[str, Any]]:
    return [
        {
            "id": "generated",
            "title": "Impossible travel",
            "severity": "high",
            "source": "sentinel",
            "user": {"userPrincipalName": KNOWN_UPNS[0]},
        },
        {
            "id": "generated-graph",
            "title": "Suspected identity theft",
            "severity": "medium",
            "serviceSource": "microsoftDefenderForIdentity",
            "createdDateTime": "2026-03-01T09:00:00Z",
            "evidence": [
                {
                    "@odata.type": "#microsoft.graph.security.userEvidence",
                    "userAccount": {
                        "userPrincipalName": KNOWN_UPNS[1],
                        "azureAdUserId": "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01",
                    },
                }
            ],
        },
    ]


@st.composite
def alert_batches(draw: st.DrawFn) -> Any:
    """One alert, an array or a {"value": [...]} batch of bent alerts with fresh ids."""
    items = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        item = copy.deepcopy(draw(st.sampled_from(base_alerts())))
        item["id"] = f"gen-{draw(st.integers(min_value=0, max_value=10**9))}"
        if draw(st.booleans()):
            item = apply(item, draw(edits(ALERT_PATHS)))
        items.append(item)
    shape = draw(st.sampled_from(["one", "array", "value"]))
    if shape == "one":
        return items[0]
    return items if shape == "array" else {"value": items}


async def _push(bot: BotHarness, body: bytes) -> tuple[int, Any]:
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(SECRET, stamp, body),
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{bot.url}/api/alerts", data=io.BytesIO(body), headers=headers) as response,
    ):
        return response.status, await response.json()


def _alert_ids(state: dict[str, Any]) -> set[str]:
    return {alert["id"] for case in state["cases"] for alert in case["alerts"]}


@PROPERTY_SETTINGS
@given(batch=alert_batches(), raw=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=64)))
async def test_no_generated_push_gets_a_5xx_or_stores_part_of_a_batch(
    live: Live, batch: Any, raw: bytes | None
) -> None:
    live_bot = live.bot
    body = raw if raw is not None else dumps(batch)
    store = live_bot.app[STORE]
    await live_bot.service.drain()
    before = await stored_state(store)
    status, answer = await _push(live_bot, body)
    await live_bot.service.drain()
    after = await stored_state(store)
    event(f"HTTP {status}")
    assert status < 500, answer
    if status != 202:
        assert _alert_ids(after) == _alert_ids(before), f"a refused push stored alerts ({status}: {answer})"
        assert after["requests"] == before["requests"]
        return
    items = (
        batch if isinstance(batch, list) else batch.get("value", [batch]) if isinstance(batch, dict) else []
    )
    items = items if isinstance(items, list) else [batch]
    assert answer["accepted"] == len(items)
    new = _alert_ids(after) - _alert_ids(before)
    assert len(new) <= len(items)
    assert all(
        any(str(item.get("id", "")).strip() in alert_id for alert_id in _alert_ids(after)) for item in items
    )
