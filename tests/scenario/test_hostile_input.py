"""Hostile input never gets a 500: a precise 4xx with a JSON body, and nothing is written.

Both endpoints read the body safely before any authentication work (nesting depth, Unicode),
check every field the bot reads for its type, and answer forged tokens 401 whatever botframework
would have raised. A store outage is not the sender's fault: it stays a 503 with a sentence.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import sqlite3
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from bot.web.app import STORE
from bot.web.push import sign
from tests.conftest import RESPONDER
from tests.scenario.test_auth import APP_ID, SERVICE_URL, _probe
from tests.scenario.test_auth import channel_keys as channel_keys
from tests.scenario.test_auth import secured_bot as secured_bot
from tests.scenario.test_intake import LEE_UPN, SECRET, minimal, push
from tests.scenario.test_intake import pushing_bot as pushing_bot
from tests.support.botauth import ISSUER, ChannelKeys
from tests.support.connector import RecordingConnector
from tests.support.harness import BOT_ID, TENANT_ID, BotHarness, install_activity, invoke_activity
from tests.support.snapshot import stored_state

DEEP = b'{"type": "message", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def click(**data: Any) -> dict[str, Any]:
    return invoke_activity(
        SERVICE_URL,
        "19:incident@thread.tacv2;messageid=1",
        user_object_id=RESPONDER["id"],
        user_name=RESPONDER["name"],
        verb="disableAccount",
        data={"caseId": "no-such-case", "cardVersion": 1, "reason": "probe", **data},
    )


def chat(text: Any = "help", **changes: Any) -> dict[str, Any]:
    activity: dict[str, Any] = {
        "type": "message",
        "id": "msg-1",
        "channelId": "msteams",
        "serviceUrl": SERVICE_URL,
        "text": text,
        "from": {"id": "29:alex", "aadObjectId": RESPONDER["id"], "name": RESPONDER["name"]},
        "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
        "conversation": {"id": "a:personal", "conversationType": "personal", "tenantId": TENANT_ID},
        "channelData": {"tenant": {"id": TENANT_ID}},
    }
    activity.update(changes)
    return activity


def changed(activity: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``activity`` with the dotted ``path`` set to ``value``."""
    result = copy.deepcopy(activity)
    node = result
    *parents, last = path.split(".")
    for name in parents:
        node = node[name]
    node[last] = value
    return result


# -- the body itself ----------------------------------------------------------------------------


async def test_deep_nesting_gets_400_before_any_authentication(
    secured_bot: BotHarness, pushing_bot: BotHarness
) -> None:
    # No token, no signature: the depth is refused first, and without a RecursionError.
    status, body = await secured_bot.post_raw(DEEP, "application/json")
    assert status == 400 and "deeper than 32 levels" in body["error"]["message"]
    status, body = await push(pushing_bot, None, raw=DEEP, signature="sha256=" + "0" * 64)
    assert status == 400 and "deeper than 32 levels" in body["error"]["message"]
    # Unbalanced, and hiding in strings: the same answer, and strings are not counted.
    status, body = await secured_bot.post_raw(b"[" * 200_000, "application/json")
    assert status == 400
    shallow = json.dumps(chat("[" * 1000)).encode()
    status, _ = await secured_bot.post_raw(shallow, "application/json")
    assert status == 401, "brackets inside a string are text: on to authentication"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        pytest.param(b'{"type": "message", "text": "\\ud800"}', "lone UTF-16 surrogate", id="lone surrogate"),
        pytest.param(
            b'{"type": "message", "text": "\\udfff\\ud800"}', "lone UTF-16 surrogate", id="reversed"
        ),
        pytest.param(b'{"type": "message", "text": "a\\u0000b"}', "NUL", id="NUL"),
        pytest.param(b'{"type": "message", "\\ud800": 1}', "A key in", id="in a key"),
        pytest.param(b'{"type": "message", "n": NaN}', "not valid JSON", id="NaN"),
        pytest.param(b'{"type": "message", "n": 1e999}', "too large", id="1e999"),
        pytest.param(b'{"type": "message", "n": ' + b"9" * 5000 + b"}", "not valid JSON", id="huge int"),
        pytest.param(b'{"type": "message", "text": "\xff"}', "not UTF-8", id="not UTF-8"),
        pytest.param('{"type": "message"}'.encode("utf-16"), "not UTF-8", id="UTF-16"),
    ],
)
async def test_invalid_text_and_numbers_get_400_on_both_endpoints(
    bot: BotHarness, pushing_bot: BotHarness, raw: bytes, words: str
) -> None:
    status, body = await bot.post_raw(raw, "application/json")
    assert status == 400 and words in body["error"]["message"]
    status, body = await push(pushing_bot, None, raw=raw)
    assert status == 400 and words in body["error"]["message"]


async def test_a_pushed_alert_with_a_lone_surrogate_stores_nothing(
    pushing_bot: BotHarness, connector: RecordingConnector
) -> None:
    before = await stored_state(pushing_bot.app[STORE])
    good = json.dumps(minimal("fine-1"))
    bad = json.dumps(minimal("bad-1", title="Impossible travel PLACEHOLDER")).replace(
        "PLACEHOLDER", "\\ud83d"
    )
    status, body = await push(pushing_bot, None, raw=f"[{good}, {bad}]".encode())
    assert status == 400 and "$[1].title" in body["error"]["message"]
    await pushing_bot.service.drain()
    assert await stored_state(pushing_bot.app[STORE]) == before
    assert connector.of_kind("create") == []
    # A real pair (an emoji) is fine.
    emoji = json.dumps(minimal("emoji-1", title="Impossible travel \U0001f600"))
    status, _ = await push(pushing_bot, None, raw=emoji.encode())
    assert status == 202


# -- activities with fields of the wrong type ---------------------------------------------------

WRONG_ACTIVITIES = [
    pytest.param(click(), "value", "not an object", "activity.value must be an object", id="value string"),
    pytest.param(click(), "value.action", [1], "activity.value.action must be an object", id="action array"),
    pytest.param(
        click(), "value.action.data", "x", "activity.value.action.data must be an object", id="data"
    ),
    pytest.param(click(), "value.action.verb", 7, "activity.value.action.verb must be a string", id="verb"),
    pytest.param(click(), "value.action.data.caseId", ["a"], "data.caseId must be a string", id="caseId"),
    pytest.param(
        click(), "value.action.data.cardVersion", "1", "cardVersion must be an integer", id="version"
    ),
    pytest.param(click(), "value.action.data.reason", {"a": 1}, "data.reason must be a string", id="reason"),
    pytest.param(click(), "from.aadObjectId", 12345, "activity.from.aadObjectId must be a string", id="oid"),
    pytest.param(click(), "from", "alex", "activity.from must be an object", id="from string"),
    pytest.param(
        click(), "conversation.tenantId", 5, "conversation.tenantId must be a string", id="tenantId"
    ),
    pytest.param(click(), "conversation.isGroup", "yes", "isGroup must be true or false", id="isGroup"),
    pytest.param(click(), "conversation", None, "conversation.id is required", id="no conversation"),
    pytest.param(click(), "channelData", "x", "activity.channelData must be an object", id="channelData"),
    pytest.param(click(), "channelData.tenant", "t", "channelData.tenant must be an object", id="tenant"),
    pytest.param(
        click(), "channelData.tenant.id", 1, "channelData.tenant.id must be a string", id="tenant id"
    ),
    pytest.param(click(), "channelData.team", [], "channelData.team must be an object", id="team"),
    pytest.param(
        click(), "channelData.channel.id", {}, "channelData.channel.id must be a string", id="channel"
    ),
    pytest.param(click(), "serviceUrl", "javascript:alert(1)", "serviceUrl must be an http(s) URL", id="url"),
    pytest.param(click(), "serviceUrl", 80, "activity.serviceUrl must be a string", id="url number"),
    pytest.param(click(), "type", ["invoke"], "activity.type must be a string", id="type"),
    pytest.param(click(), "name", 3, "activity.name must be a string", id="name"),
    pytest.param(chat(), "text", 42, "activity.text must be a string", id="text"),
    pytest.param(chat(), "entities", "mention", "activity.entities must be an array", id="entities"),
    pytest.param(chat(), "entities", [None], "activity.entities[0] must not be null", id="null entity"),
    pytest.param(
        chat(), "entities", [{"type": 1}], "activity.entities[0].type must be a string", id="entity"
    ),
    pytest.param(chat(), "membersAdded", [1], "activity.membersAdded[0] must be an object", id="members"),
    pytest.param(chat(), "timestamp", 1700000000, "activity.timestamp must be a string", id="timestamp"),
    pytest.param(chat(), "timestamp", "yesterday", "not a Bot Framework activity", id="bad time"),
    pytest.param(chat(), "recipient", [], "activity.recipient must be an object", id="recipient"),
    pytest.param(
        chat(), "attachments", [{"contentType": 5}], "contentType must be a string", id="attachment"
    ),
]


@pytest.mark.parametrize(("activity", "path", "value", "words"), WRONG_ACTIVITIES)
async def test_wrong_types_in_an_activity_get_400_and_change_nothing(
    bot: BotHarness,
    connector: RecordingConnector,
    activity: dict[str, Any],
    path: str,
    value: Any,
    words: str,
) -> None:
    store = bot.app[STORE]
    before = await stored_state(store)
    status, body = await bot.post(changed(activity, path, value))
    await bot.service.drain()
    assert status == 400, body
    assert body["error"]["code"] == "BadRequest" and words in body["error"]["message"]
    assert await stored_state(store) == before
    assert connector.calls == []


async def test_an_invoke_the_bot_does_not_offer_gets_400(bot: BotHarness) -> None:
    for name in ("signin/verifyState", "composeExtension/query", "task/fetch", "whatever"):
        status, body = await bot.post(changed(click(), "name", name))
        assert status == 400 and "only Adaptive Card actions" in body["error"]["message"]


@pytest.mark.parametrize(
    "entities",
    [
        [{"type": "mention", "mentioned": {"id": BOT_ID}}],
        [{"type": "mention", "mentioned": {"id": BOT_ID, "name": None}, "text": None}],
        [{"type": "mention", "text": "<at>(a+)+$</at>", "mentioned": {"id": BOT_ID, "name": "(a+)+$"}}],
        [{"type": "mention"}],
        [{"type": "clientInfo", "locale": "en-US"}],
    ],
)
async def test_odd_mentions_are_text_not_a_crash(
    bot: BotHarness, connector: RecordingConnector, entities: list[dict[str, Any]]
) -> None:
    text = "<at>(a+)+$</at> " + "a" * 40 + "! help"
    status, _ = await bot.post(chat(text, serviceUrl=connector.service_url, entities=entities))
    await bot.service.drain()
    assert status in (200, 201)
    assert len(connector.of_kind("send")) == 1, "answered once"


async def test_a_reply_that_cannot_be_delivered_is_not_a_server_error(bot: BotHarness) -> None:
    status, _ = await bot.post(chat("help", serviceUrl="http://127.0.0.1:9/"))
    assert status in (200, 201)


# -- forged tokens ------------------------------------------------------------------------------


def _encode(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": APP_ID, "serviceurl": SERVICE_URL, "nbf": now - 10, "exp": now + 3600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _alg_none(keys: ChannelKeys) -> str:
    return f"{_encode({'alg': 'none', 'kid': keys.kid})}.{_encode(_claims())}."


def _hs256_with_public_key(keys: ChannelKeys) -> str:
    public = keys.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": keys.kid}
    signing_input = f"{_encode(header)}.{_encode(_claims())}".encode()
    import hmac as _hmac
    from hashlib import sha256

    signature = base64.urlsafe_b64encode(_hmac.new(public, signing_input, sha256).digest()).rstrip(b"=")
    return f"{signing_input.decode()}.{signature.decode()}"


def _signed(keys: ChannelKeys, headers: dict[str, Any] | None = None, **claims: Any) -> str:
    """An RS256 token signed by the channel's real key, with any header and claims at all."""
    header = (
        {"alg": "RS256", "typ": "JWT", "kid": keys.kid} if headers is None else {"alg": "RS256", **headers}
    )
    signing_input = f"{_encode(header)}.{_encode(_claims(**claims))}".encode()
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input, keys.key)
    return f"{signing_input.decode()}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda keys: f"Bearer {_alg_none(keys)}", id="alg none"),
        pytest.param(lambda keys: f"Bearer {_hs256_with_public_key(keys)}", id="HS256 with the public key"),
        pytest.param(lambda keys: f"Bearer {_signed(keys, exp=None)}", id="validly signed, no exp"),
        pytest.param(lambda keys: f"Bearer {_signed(keys, exp='tomorrow')}", id="exp not a number"),
        pytest.param(lambda keys: f"Bearer {_signed(keys, headers={})}", id="no kid"),
        pytest.param(lambda keys: f"Bearer {_signed(keys, headers={'kid': 5})}", id="kid a number"),
        pytest.param(lambda keys: f"Bearer {_signed(keys, iss=['x'])}", id="issuer a list"),
        pytest.param(lambda keys: "Bearer not.a.jwt", id="garbage"),
        pytest.param(lambda keys: "Bearer " + "a" * 5000, id="long garbage"),
        pytest.param(lambda keys: "Basic YWxleDpzZWNyZXQ=", id="basic auth"),
        pytest.param(lambda keys: f"Bearer {_signed(keys)} extra", id="two parts"),
        pytest.param(lambda keys: f"Bearer {_encode({'alg': 'RS256'})}.e30.", id="empty claims"),
    ],
)
async def test_forged_tokens_of_every_kind_get_401(
    secured_bot: BotHarness, channel_keys: ChannelKeys, forge: Any, caplog: pytest.LogCaptureFixture
) -> None:
    header = forge(channel_keys)
    with caplog.at_level(logging.WARNING):
        status, body = await secured_bot.post(_probe(), headers={"Authorization": header})
    assert status == 401
    assert body == {
        "error": {
            "code": "Unauthorized",
            "message": "The request's Bot Framework token is missing or invalid.",
        }
    }
    assert not any(record.exc_info for record in caplog.records), "one short log line, no stack trace"
    assert header.split(" ")[-1] not in caplog.text
    assert await secured_bot.app[STORE].list_audit() == []


async def test_a_validly_signed_token_with_an_expiry_still_works(
    secured_bot: BotHarness, channel_keys: ChannelKeys
) -> None:
    status, body = await secured_bot.post(
        _probe(), headers={"Authorization": f"Bearer {_signed(channel_keys)}"}
    )
    assert status == 200 and body["statusCode"] == 404


# -- pushed alerts with fields of the wrong type ------------------------------------------------


def graph_alert(**changes: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "id": "da-1",
        "title": "Suspected identity theft",
        "severity": "high",
        "status": "new",
        "serviceSource": "microsoftDefenderForIdentity",
        "createdDateTime": "2026-03-01T09:00:00Z",
        "lastUpdateDateTime": "2026-03-01T09:05:00.1234567Z",
        "mitreTechniques": ["T1550.003"],
        "evidence": [
            {
                "@odata.type": "#microsoft.graph.security.userEvidence",
                "roles": ["compromised"],
                "userAccount": {
                    "userPrincipalName": LEE_UPN,
                    "azureAdUserId": "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03",
                    "displayName": "Lee Gu",
                },
            }
        ],
    }
    alert.update(changes)
    return alert


def _account(**changes: Any) -> list[dict[str, Any]]:
    evidence = graph_alert()["evidence"]
    evidence[0]["userAccount"].update(changes)
    return list(evidence)


WRONG_ALERTS = [
    pytest.param(
        graph_alert(
            evidence=[
                {"@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": "lee.gu@contoso.com"}
            ]
        ),
        "evidence[0].userAccount",
        "must be an object",
        id="userAccount a string",
    ),
    pytest.param(graph_alert(title=42), "title", "must be a string", id="title a number"),
    pytest.param(
        graph_alert(evidence={"userAccount": {}}), "evidence", "must be an array", id="evidence object"
    ),
    pytest.param(graph_alert(evidence=["x"]), "evidence[0]", "must be an object", id="evidence item"),
    pytest.param(graph_alert(id=7), "id", "must be a string", id="id a number"),
    pytest.param(graph_alert(id="a\nb"), "id", "control characters", id="id with a newline"),
    pytest.param(graph_alert(id="x" * 300), "id", "at most 256", id="id too long"),
    pytest.param(graph_alert(severity=["high"]), "severity", "must be a string", id="severity array"),
    pytest.param(graph_alert(status={}), "status", "must be a string", id="status object"),
    pytest.param(graph_alert(mitreTechniques="T1"), "mitreTechniques", "array of strings", id="techniques"),
    pytest.param(graph_alert(mitreTechniques=[1]), "mitreTechniques", "array of strings", id="technique"),
    pytest.param(
        graph_alert(createdDateTime=1700000000), "createdDateTime", "must be a string", id="created"
    ),
    pytest.param(graph_alert(lastUpdateDateTime="soon"), "lastUpdateDateTime", "ISO 8601", id="updated"),
    pytest.param(graph_alert(alertWebUrl=5), "alertWebUrl", "must be a string", id="url"),
    pytest.param(graph_alert(detectionSource=True), "detectionSource", "must be a string", id="detection"),
    pytest.param(graph_alert(serviceSource=["x"]), "serviceSource", "must be microsoft", id="source"),
    pytest.param(
        graph_alert(evidence=[{"@odata.type": 3}]),
        "evidence[0].@odata.type",
        "must be a string",
        id="odata type",
    ),
    pytest.param(
        graph_alert(evidence=[{"@odata.type": "#microsoft.graph.security.userEvidence", "roles": 5}]),
        "evidence[0].roles",
        "array of strings",
        id="roles",
    ),
    pytest.param(
        graph_alert(evidence=_account(userPrincipalName=5)),
        "evidence[0].userAccount.userPrincipalName",
        "must be a string",
        id="upn number",
    ),
    pytest.param(
        graph_alert(evidence=_account(azureAdUserId="not-a-guid")),
        "evidence[0].userAccount.azureAdUserId",
        "GUID",
        id="object id",
    ),
    pytest.param(
        graph_alert(evidence=_account(displayName=["Lee"])),
        "evidence[0].userAccount.displayName",
        "must be a string",
        id="display name",
    ),
    pytest.param({**minimal("m-1"), "title": 5}, "title", "must be a string", id="minimal title"),
    pytest.param({**minimal("m-1"), "title": "  "}, "title", "non-empty string", id="minimal blank title"),
    pytest.param({**minimal("m-1"), "user": {"objectId": 5}}, "user.objectId", "must be a string", id="oid"),
    pytest.param(
        {**minimal("m-1"), "user": {"userPrincipalName": "a b@c"}},
        "user.userPrincipalName",
        "user principal name",
        id="upn with a space",
    ),
    pytest.param({**minimal("m-1"), "user": "lee"}, "user", "is required", id="user a string"),
    pytest.param({**minimal("m-1"), "source": {"a": 1}}, "source", "must be a string", id="source object"),
    pytest.param({**minimal("m-1"), "url": 5}, "url", "must be a string", id="minimal url"),
    pytest.param(
        {**minimal("m-1"), "severity": ["high"]}, "severity", "must be one of", id="minimal severity"
    ),
    pytest.param(
        {**minimal("m-1"), "createdDateTime": 5}, "createdDateTime", "must be a string", id="m created"
    ),
    pytest.param({**minimal("m-1"), "id": {"a": 1}}, "id", "must be a string", id="minimal id"),
]


@pytest.mark.parametrize(("item", "field", "words"), WRONG_ALERTS)
async def test_a_pushed_alert_with_a_wrong_type_gets_400_naming_the_field(
    pushing_bot: BotHarness, connector: RecordingConnector, item: dict[str, Any], field: str, words: str
) -> None:
    before = await stored_state(pushing_bot.app[STORE])
    status, body = await push(pushing_bot, {"value": [minimal("fine-1"), item]})
    assert status == 400, body
    details = body["error"]["details"]
    assert any(d["field"] == f"[1].{field}" and words in d["error"] for d in details), details
    await pushing_bot.service.drain()
    assert await stored_state(pushing_bot.app[STORE]) == before, "the valid first item is not stored either"
    assert connector.of_kind("create") == []


async def test_the_well_typed_graph_alert_is_accepted(pushing_bot: BotHarness) -> None:
    status, body = await push(pushing_bot, graph_alert())
    assert status == 202 and body["accepted"] == 1


# -- the catch-all does not hide the bot's own faults ------------------------------------------


def _break(bot: BotHarness, table: str) -> sqlite3.Connection:
    """Make every insert into ``table`` fail, through a second connection to the bot's database."""
    db = sqlite3.connect(bot.settings.sqlite_path, isolation_level=None)
    db.execute(
        f"CREATE TRIGGER broken_{table} BEFORE INSERT ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END"
    )
    return db


async def test_a_store_outage_is_503_with_a_sentence_not_400(pushing_bot: BotHarness) -> None:
    db = _break(pushing_bot, "replay_claims")
    try:
        status, body = await push(pushing_bot, minimal("outage-1"))
        assert status == 503 and "send the request again" in body["error"]["message"]
    finally:
        db.execute("DROP TRIGGER broken_replay_claims")
        db.close()
    status, _ = await push(pushing_bot, minimal("outage-1"))
    assert status == 202


async def test_a_failed_store_releases_the_replay_claim_so_the_same_request_may_be_retried(
    pushing_bot: BotHarness, connector: RecordingConnector
) -> None:
    raw = json.dumps(minimal("retry-1")).encode()
    stamp = int(time.time())
    signature = sign(SECRET, str(stamp), raw)
    db = _break(pushing_bot, "alerts")
    try:
        status, body = await push(pushing_bot, None, raw=raw, timestamp=stamp, signature=signature)
        assert status == 503 and "could not be stored" in body["error"]["message"]
    finally:
        db.execute("DROP TRIGGER broken_alerts")
        db.close()
    status, _ = await push(pushing_bot, None, raw=raw, timestamp=stamp, signature=signature)
    assert status == 202, "the very same signed request is accepted once it could be stored"
    status, body = await push(pushing_bot, None, raw=raw, timestamp=stamp, signature=signature)
    assert status == 401 and "replay" in body["error"]["message"]


# -- replays under concurrency ------------------------------------------------------------------


async def test_twenty_identical_signed_pushes_at_once_get_one_202(
    pushing_bot: BotHarness, connector: RecordingConnector
) -> None:
    raw = json.dumps(minimal("replay-race-1")).encode()
    stamp = int(time.time())
    signature = sign(SECRET, str(stamp), raw)
    answers = await asyncio.gather(
        *(push(pushing_bot, None, raw=raw, timestamp=stamp, signature=signature) for _ in range(20))
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] + [401] * 19
    assert all(
        "already received (replay)" in body["error"]["message"] for status, body in answers if status == 401
    )
    await pushing_bot.service.drain()
    assert len(connector.of_kind("create")) == 1
    case = await pushing_bot.case_of(LEE_UPN)
    assert [a.id for a in case.alerts] == ["push:replay-race-1"]


async def test_an_install_activity_is_unaffected(bot: BotHarness, connector: RecordingConnector) -> None:
    status, _ = await bot.post(install_activity(connector.service_url))
    assert status in (200, 201)


# -- bodies that arrive in pieces ---------------------------------------------------------------


async def _in_pieces(body: bytes, pieces: int = 4) -> Any:
    step = max(1, len(body) // pieces)
    for start in range(0, len(body), step):
        yield body[start : start + step]
        await asyncio.sleep(0.01)  # separate packets: the server sees the body arrive in parts


async def _post_chunked(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url, data=_in_pieces(body), headers={"Content-Type": "application/json", **headers}
        ) as answer,
    ):
        text = await answer.text()
        return answer.status, json.loads(text) if text else None


async def test_a_body_sent_in_pieces_is_read_whole(
    pushing_bot: BotHarness, connector: RecordingConnector
) -> None:
    body = json.dumps([minimal(f"pieces-{i}") for i in range(50)]).encode()
    stamp = str(int(time.time()))
    headers = {"X-Remediation-Timestamp": stamp, "X-Remediation-Signature": sign(SECRET, stamp, body)}
    status, answer = await _post_chunked(f"{pushing_bot.url}/api/alerts", body, headers)
    assert (status, answer["accepted"]) == (202, 50)
    status, _ = await _post_chunked(
        f"{pushing_bot.url}/api/messages",
        json.dumps(chat("help", serviceUrl=connector.service_url)).encode(),
        {},
    )
    assert status in (200, 201)


async def test_a_body_sent_in_pieces_past_the_limit_gets_413(pushing_bot: BotHarness) -> None:
    huge = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    status, body = await _post_chunked(f"{pushing_bot.url}/api/alerts", huge, {})
    assert status == 413 and "bytes per request" in body["error"]["message"]
    status, body = await _post_chunked(f"{pushing_bot.url}/api/messages", huge, {})
    assert status == 413 and "limited to" in body["error"]["message"]


async def test_a_batch_of_bad_items_lists_a_bounded_number_of_errors(pushing_bot: BotHarness) -> None:
    status, body = await push(pushing_bot, [{"id": 1, "title": 2, "severity": 3, "user": 4}] * 500)
    assert status == 400
    assert len(body["error"]["details"]) == 200
    assert "The first 200 of 2000 field errors are listed." in body["error"]["message"]


async def test_in_sandbox_mode_an_authorization_header_is_ignored(
    bot: BotHarness, connector: RecordingConnector
) -> None:
    headers = {"Authorization": "Bearer not.a.token"}
    status, _ = await bot.post(chat("help", serviceUrl=connector.service_url), headers=headers)
    assert status in (200, 201)
    assert len(connector.of_kind("send")) == 1


async def test_an_installation_during_a_store_outage_is_503_so_teams_sends_it_again(
    bot: BotHarness, connector: RecordingConnector
) -> None:
    db = _break(bot, "meta")
    try:
        status, body = await bot.post(install_activity(connector.service_url))
        assert status == 503 and "Try again" in body["error"]["message"]
    finally:
        db.execute("DROP TRIGGER broken_meta")
        db.close()
    assert await bot.app[STORE].get_channel() is None
    status, _ = await bot.post(install_activity(connector.service_url))
    assert status in (200, 201)
    assert await bot.app[STORE].get_channel() is not None
