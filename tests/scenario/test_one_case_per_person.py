"""One case per person, whatever names them: through the real app, the sandbox tenant and the
recording Bot Connector.

A person is named by Entra object id (a polled alert), by UPN alone in any letter case (a pushed
minimal alert, a Defender alert without an object id) or typed by a responder; every one of
these is resolved to the object id before it joins or opens a case. A name Entra ID cannot
resolve yet opens a case that offers no action and says so, until it is resolved.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config.settings import Settings
from bot.domain.models import (
    ActionRequest,
    ActionResult,
    Actor,
    Alert,
    AlertSource,
    CardRef,
    Case,
    IdentityRef,
    RequestState,
    ResponseAction,
    Severity,
)
from bot.domain.plans import UNRESOLVED
from bot.store.sqlite import MIGRATIONS as sqlite_migrations
from bot.tenant.resolver import NOT_FOUND_TTL, UNAVAILABLE_TTL
from bot.web.app import STORE
from bot.web.push import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, SECOND_RESPONDER, Clock
from tests.scenario.test_approvals import card_text, verbs
from tests.scenario.test_chat import say
from tests.support.connector import RecordingConnector
from tests.support.harness import CHANNEL_ID, BotHarness, card_action, install_activity, invoke_activity

SECRET = "s3cr3t-for-the-push-endpoint-0123456789"
LEE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"
LEE_UPN = "lee.gu@contoso.com"
LEE_LOOKUP = r"(?i)/users/lee\.gu@contoso\.com$"
_stamps = itertools.count()


@pytest.fixture
async def bot(
    make_settings: Callable[..., Settings], clock: Clock, connector: RecordingConnector
) -> AsyncIterator[BotHarness]:
    harness = BotHarness(make_settings(push_shared_secret=SECRET, card_update_coalesce_seconds=0), clock)
    await harness.start()
    await harness.post(install_activity(connector.service_url))
    await harness.service.drain()
    yield harness
    await harness.stop()


async def push(bot: BotHarness, payload: Any) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()) - next(_stamps) % 60)  # distinct signatures, inside the window
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


def minimal(alert_id: str, upn: str, title: str = "Impossible travel") -> dict[str, Any]:
    return {
        "id": alert_id,
        "title": title,
        "severity": "high",
        "source": "sentinel",
        "user": {"userPrincipalName": upn},
    }


def defender_alert_without_object_id(alert_id: str, upn: str) -> dict[str, Any]:
    """A Graph security alert whose user evidence names the UPN only (no azureAdUserId)."""
    return {
        "id": alert_id,
        "title": "Suspicious additions to sensitive groups",
        "severity": "medium",
        "status": "new",
        "serviceSource": "microsoftDefenderForIdentity",
        "detectionSource": "microsoftDefenderForIdentity",
        "createdDateTime": "2026-03-01T09:00:00Z",
        "lastUpdateDateTime": "2026-03-01T09:00:00Z",
        "evidence": [
            {
                "@odata.type": "#microsoft.graph.security.userEvidence",
                "roles": ["compromised"],
                "userAccount": {"userPrincipalName": upn, "accountName": "lee.gu"},
            }
        ],
    }


async def open_cases_of(bot: BotHarness, upn: str) -> list[Case]:
    """Every open (not merged) case naming ``upn`` (case-insensitively)."""
    return [
        case
        for case in await bot.app[STORE].list_cases()
        if (case.identity.upn or "").lower() == upn.lower() and not case.merged_into
    ]


def card_of(connector: RecordingConnector, case: Case) -> dict[str, Any]:
    """The card of ``case`` as the channel shows it now (its post, or its latest update)."""
    assert case.card is not None, f"case {case.id} has no card"
    shown = [
        c
        for c in connector.calls
        if c.kind in ("create", "update") and c.activity_id == case.card.activity_id and c.card is not None
    ]
    assert shown, f"no post or update of case {case.id}'s card"
    card = shown[-1].card
    assert card is not None
    return card


async def click(
    bot: BotHarness,
    connector: RecordingConnector,
    case: Case,
    person: dict[str, str],
    verb: str,
    data: dict[str, Any],
) -> dict[str, Any]:
    assert case.card is not None
    status, answer = await bot.post(
        invoke_activity(
            connector.service_url,
            case.card.conversation_id,
            user_object_id=person["id"],
            user_name=person["name"],
            verb=verb,
            data={**data, "reason": "impossible travel, containing"},
        )
    )
    await bot.service.drain()
    assert status == 200 and isinstance(answer, dict)
    return answer


def disables_of(tenant: SandboxTenant, user_id: str) -> list[Any]:
    return [
        r
        for r in tenant.requests
        if r.method == "PATCH" and user_id in r.path and (r.json or {}).get("accountEnabled") is False
    ]


def result_replies(connector: RecordingConnector, case: Case) -> list[str]:
    assert case.card is not None
    return [c.text for c in connector.in_thread(case.card.activity_id) if "Result:" in c.text]


async def test_a_polled_person_named_again_by_upn_alone_has_one_case_one_card_and_one_disable(
    bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant
) -> None:
    await bot.poller.poll_once()
    await bot.service.drain()
    [polled] = await open_cases_of(bot, LEE_UPN)
    assert polled.identity.object_id == LEE
    posted = len(connector.of_kind("create"))

    # Sentinel pushes the minimal form by UPN in other letters; Defender sends one without an id.
    assert (await push(bot, minimal("sentinel-7", "LEE.GU@Contoso.COM")))[0] == 202
    assert (await push(bot, defender_alert_without_object_id("da-no-oid-1", "Lee.Gu@CONTOSO.com")))[0] == 202
    await bot.service.drain()

    [case] = await open_cases_of(bot, LEE_UPN)
    assert case.id == polled.id, "the UPN named the person who already had a case"
    assert {a.id for a in case.alerts} >= {"push:sentinel-7", "da-no-oid-1"}
    assert len(connector.of_kind("create")) == posted, "no second card"
    assert len(await bot.app[STORE].list_cases()) == 3, "one case each for Adele, Lee and Break Glass"

    # Two responders look at the one card and both click Disable.
    card = card_of(connector, case)
    assert "Impossible travel" in card_text(card)
    disable = dict(card_action(card, "disableAccount")["data"])
    await click(bot, connector, case, RESPONDER, "disableAccount", disable)
    second = await click(bot, connector, case, SECOND_RESPONDER, "disableAccount", disable)
    assert "out of date, so nothing was done" in json.dumps(second)
    assert len(disables_of(tenant, LEE)) == 1, "the account is disabled once"
    assert tenant.user(LEE)["accountEnabled"] is False
    case = (await open_cases_of(bot, LEE_UPN))[0]
    assert len(result_replies(connector, case)) == 1, "one result in the thread"


async def test_an_unresolvable_upn_opens_a_case_that_offers_no_action_until_it_resolves(
    bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant, clock: Clock
) -> None:
    # Entra ID does not know the account yet (a new hire, replication lag): 404 for a while.
    tenant.inject_fault("GET", LEE_LOOKUP, status=404, times=1)
    assert (await push(bot, minimal("sentinel-new-1", "Lee.Gu@contoso.com")))[0] == 202
    await bot.service.drain()

    [case] = await open_cases_of(bot, LEE_UPN)
    assert case.identity.object_id is None
    card = card_of(connector, case)
    assert UNRESOLVED in card_text(card), "the card says in plain words why nothing is offered"
    assert verbs(card) == set(), "no action button at all"
    # A forged click (the case id and revision are easy to guess) is refused and changes nothing.
    answer = await click(
        bot, connector, case, RESPONDER, "disableAccount", {"caseId": case.id, "cardVersion": case.revision}
    )
    assert "not matched to an Entra ID account yet" in json.dumps(answer)
    assert [r for r in tenant.requests if r.method in ("PATCH", "POST") and "/users/" in r.path] == []
    assert await bot.service.settle_unresolved() == 0, "the 'no such user' answer is cached briefly"

    # Later the account is there: the next sweep resolves it, and the same card offers actions.
    clock.now += NOT_FOUND_TTL + timedelta(seconds=1)
    await bot.service.sweep()
    await bot.service.drain()
    [resolved] = await open_cases_of(bot, LEE_UPN)
    assert resolved.id == case.id and resolved.identity.object_id == LEE
    card = card_of(connector, resolved)
    assert UNRESOLVED not in card_text(card)
    assert "disableAccount" in verbs(card)
    assert len(connector.of_kind("create")) == 1, "the same card, updated"
    kinds = [e.kind for e in await bot.app[STORE].list_audit(case_id=case.id)]
    assert kinds[:3] == ["case.opened", "request.refused", "case.resolved"]

    await click(
        bot,
        connector,
        resolved,
        RESPONDER,
        "disableAccount",
        dict(card_action(card, "disableAccount")["data"]),
    )
    assert len(disables_of(tenant, LEE)) == 1


async def test_an_unresolved_case_is_merged_into_the_persons_case_once_resolved(
    bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant, clock: Clock
) -> None:
    await bot.poller.poll_once()
    await bot.service.drain()
    [polled] = await open_cases_of(bot, LEE_UPN)
    # Graph is unavailable when a push names Lee by UPN: who it is cannot be told yet.
    tenant.inject_fault("GET", LEE_LOOKUP, status=503, headers={"Retry-After": "0"}, times=4)
    assert (await push(bot, minimal("sentinel-8", "lee.gu@CONTOSO.com", "Token theft")))[0] == 202
    await bot.service.drain()
    waiting = next(c for c in await open_cases_of(bot, LEE_UPN) if c.id != polled.id)
    assert verbs(card_of(connector, waiting)) == set(), "the unresolved case offers nothing to click"

    # Graph recovers; the sweep resolves the name to Lee's object id: one case for Lee again.
    clock.now += UNAVAILABLE_TTL + timedelta(seconds=1)
    await bot.service.sweep()
    await bot.service.drain()
    [case] = await open_cases_of(bot, LEE_UPN)
    assert case.id == polled.id
    assert "push:sentinel-8" in {a.id for a in case.alerts}
    assert "Token theft" in card_text(card_of(connector, case))
    merged = await bot.app[STORE].get_case(waiting.id)
    assert merged is not None and merged.merged_into == polled.id and merged.closed_reason
    closed_card = card_of(connector, merged)
    assert f"merged into case {polled.id}" in card_text(closed_card) and verbs(closed_card) == set()
    # The alert's later updates go to the person's case.
    assert (await push(bot, minimal("sentinel-8", LEE_UPN, "Token theft (updated)")))[0] == 202
    audit = [e.kind for e in await bot.app[STORE].list_audit(case_id=waiting.id)]
    assert "case.merged" in audit


async def test_concurrent_poll_and_push_for_one_person_make_one_case(
    bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant
) -> None:
    results = await asyncio.gather(
        bot.poller.poll_once(),
        *(
            push(bot, minimal(f"race-{n}", "Lee.Gu@Contoso.com" if n % 2 else LEE_UPN.upper()))
            for n in range(6)
        ),
        push(bot, defender_alert_without_object_id("da-race", "LEE.gu@contoso.com")),
    )
    assert all(status == 202 for status, _ in results[1:])
    await bot.service.drain()
    [case] = await open_cases_of(bot, LEE_UPN)
    assert case.identity.object_id == LEE
    assert {f"push:race-{n}" for n in range(6)} | {"da-race"} <= {a.id for a in case.alerts}
    lee_cards = [c for c in connector.of_kind("create") if "Lee Gu" in c.text]
    assert len(lee_cards) == 1, "one card for Lee"


async def test_contain_by_upn_in_other_letters_joins_the_persons_case(
    bot: BotHarness, connector: RecordingConnector
) -> None:
    await bot.poller.poll_once()
    await bot.service.drain()
    [polled] = await open_cases_of(bot, LEE_UPN)
    posted = len(connector.of_kind("create"))
    assert "already has an open case" in await say(bot, connector, "contain LEE.GU@CONTOSO.COM")
    [case] = await open_cases_of(bot, LEE_UPN)
    assert case.id == polled.id and case.alerts[-1].source.value == "manual"
    assert len(connector.of_kind("create")) == posted


async def test_a_push_batch_is_stored_all_or_nothing(
    bot: BotHarness, connector: RecordingConnector, tenant: SandboxTenant
) -> None:
    await bot.poller.poll_once()
    await bot.service.drain()
    before = await bot.app[STORE].list_cases()
    posted = len(connector.of_kind("create"))
    # The last item passes parsing but cannot be stored (a lone surrogate is not valid Unicode);
    # the first two name a new person and a person with a case. Refusing such input with a 400
    # is the push validation's business; storing none of the batch is the store's.
    body = (
        '{"value": ['
        + json.dumps(minimal("batch-1", "megan.admin@contoso.com"))
        + ","
        + json.dumps(minimal("batch-2", LEE_UPN))
        + ',{"id": "batch-3", "title": "bad \\ud800 title", "severity": "high", "source": "x", '
        '"user": {"userPrincipalName": "adele.vance@contoso.com"}}]}'
    ).encode()
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
        assert response.status != 202
    await bot.service.drain()
    assert await bot.app[STORE].list_cases() == before, "no case opened, no alert added"
    assert len(connector.of_kind("create")) == posted
    # The same good items, sent again on their own, are new: nothing of the batch was kept.
    status, answer = await push(
        bot, [minimal("batch-1", "megan.admin@contoso.com"), minimal("batch-2", LEE_UPN)]
    )
    assert (status, answer["newOrChanged"]) == (202, 2)


async def test_an_upgrade_merges_old_duplicates_and_nothing_runs_from_the_closed_case(
    make_settings: Callable[..., Settings],
    clock: Clock,
    connector: RecordingConnector,
    tenant: SandboxTenant,
    tmp_path: Path,
) -> None:
    # A database left by an older version: Lee has a case under his object id and one under
    # his UPN, each with a card in the channel; a Disable from the UPN case failed and could
    # still be retried.
    seen = clock.now - timedelta(minutes=5)

    def old_case(case_id: str, identity: IdentityRef, activity_id: str) -> Case:
        alert = Alert(
            id=f"old-{case_id}",
            source=AlertSource.PUSHED,
            title=f"Old alert of {case_id}",
            severity=Severity.HIGH,
            status="new",
            created_at=seen,
            updated_at=seen,
            target=identity,
        )
        card = CardRef(conversation_id=CHANNEL_ID, activity_id=activity_id)
        return Case(
            id=case_id,
            identity=identity,
            alerts=(alert,),
            opened_at=seen,
            card=card,
            published_revision=1,
            target_checked=True,
            version=1,
        )

    polled = old_case("lee-polled", IdentityRef(object_id=LEE, upn=LEE_UPN, display_name="Lee Gu"), "900")
    # The UPN case learnt the object id when its card was first sent (and kept its UPN key).
    pushed = old_case("lee-pushed", IdentityRef(object_id=LEE, upn="Lee.Gu@contoso.com"), "901")
    alex = Actor(object_id=RESPONDER["id"], name=RESPONDER["name"])
    failed = ActionRequest(
        id="old-request",
        case_id=pushed.id,
        action=ResponseAction.DISABLE_ACCOUNT,
        requester=alex,
        reason="impossible travel",
        state=RequestState.FAILED,
        created_at=seen,
        expires_at=clock.now + timedelta(minutes=25),
        approvals=(alex,),
        idempotency_key="old-request:1",
        started_at=seen,
        finished_at=seen,
        reported_attempt=1,
        result=ActionResult(succeeded=False, summary="Graph was unavailable."),
        version=1,
    )
    db = sqlite3.connect(tmp_path / "bot.db", isolation_level=None)
    for script in sqlite_migrations[:3]:
        assert isinstance(script, str)
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    for case, key in ((polled, LEE), (pushed, LEE_UPN)):
        db.execute(
            "INSERT INTO cases (id, identity_key, active, data, version) VALUES (?, ?, 1, ?, 1)",
            (case.id, key, case.model_dump_json()),
        )
        db.execute("INSERT INTO alerts (id, case_id) VALUES (?, ?)", (case.alerts[0].id, case.id))
    db.execute(
        "INSERT INTO action_requests (id, case_id, state, data, version) VALUES (?, ?, ?, ?, 1)",
        (failed.id, failed.case_id, failed.state.value, failed.model_dump_json()),
    )
    db.close()

    bot = BotHarness(make_settings(push_shared_secret=SECRET, card_update_coalesce_seconds=0), clock)
    await bot.start()
    try:
        await bot.post(install_activity(connector.service_url))
        await bot.service.drain()
        await bot.service.publish_cards()
        await bot.service.drain()
        [case] = await open_cases_of(bot, LEE_UPN)
        assert case.id == polled.id and {a.id for a in case.alerts} == {"old-lee-polled", "old-lee-pushed"}
        closed = await bot.app[STORE].get_case(pushed.id)
        assert closed is not None and closed.merged_into == polled.id
        # Both cards in the channel are brought up to date; the closed one says where to act.
        updated = {c.activity_id: c.card for c in connector.of_kind("update") if c.card is not None}
        assert "Old alert of lee-pushed" in card_text(updated["900"])
        assert f"merged into case {polled.id}" in card_text(updated["901"])
        assert verbs(updated["901"]) == set(), "no Retry on the closed case's card"
        # A Retry forged from the closed case's old card runs nothing.
        answer = await click(
            bot,
            connector,
            closed,
            RESPONDER,
            "retry",
            {"requestId": failed.id, "cardVersion": closed.revision},
        )
        assert f"merged into case {polled.id}" in json.dumps(answer)
        assert disables_of(tenant, LEE) == []
        assert connector.of_kind("create") == [], "no card was posted again"
    finally:
        await bot.stop()
