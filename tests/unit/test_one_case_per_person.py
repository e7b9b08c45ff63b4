"""The pure parts of "one case per person": what an unresolved or merged case offers, how cases
are re-keyed and merged, the merge plan for old duplicates, and the cards that say so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain.approval import Refused
from bot.domain.models import Alert, AlertSource, CardRef, Case, IdentityRef, ResponseAction, Severity
from bot.domain.plans import UNRESOLVED, blocked, offered_actions, plan
from bot.store.merging import plan_merges
from cards.case import render_case
from tests.scenario.test_approvals import card_text, verbs
from tests.support.cardcheck import check_card

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"
BY_NAME = IdentityRef(upn="Lee.Gu@contoso.com")
RESOLVED = IdentityRef(object_id=OID, upn="lee.gu@contoso.com", display_name="Lee Gu")


def alert(alert_id: str, target: IdentityRef, minutes: int = 0) -> Alert:
    return Alert(
        id=alert_id,
        source=AlertSource.PUSHED,
        title=f"Impossible travel {alert_id}",
        severity=Severity.HIGH,
        status="new",
        created_at=T0 + timedelta(minutes=minutes),
        updated_at=T0 + timedelta(minutes=minutes),
        target=target,
    )


def case(case_id: str, identity: IdentityRef, *alert_ids: str) -> Case:
    alerts = tuple(alert(a, identity, n) for n, a in enumerate(alert_ids))
    return Case(id=case_id, identity=identity, alerts=alerts, opened_at=T0, version=1)


def test_an_unresolved_case_offers_nothing_and_refuses_every_action_with_the_reason() -> None:
    unresolved = case("c1", BY_NAME, "a1")
    assert not unresolved.resolved and blocked(unresolved) == UNRESOLVED
    assert offered_actions(unresolved) == []
    for action in ResponseAction:
        outcome = plan(action, unresolved)
        assert isinstance(outcome, Refused) and outcome.reason == UNRESOLVED


def test_the_unresolved_card_says_so_in_plain_words_and_is_valid() -> None:
    card = render_case(case("c1", BY_NAME, "a1"))
    assert UNRESOLVED in card_text(card)
    assert verbs(card) == set()
    assert check_card(card) == []


def test_rekeying_learns_the_object_id_and_asks_for_a_fresh_read() -> None:
    unresolved = case("c1", BY_NAME, "a1").model_copy(update={"target_checked": True})
    rekeyed = unresolved.rekeyed(RESOLVED)
    assert rekeyed.identity.object_id == OID and rekeyed.identity.upn == "Lee.Gu@contoso.com"
    assert rekeyed.identity.display_name == "Lee Gu"
    assert rekeyed.resolved and not rekeyed.target_checked and rekeyed.revision == unresolved.revision + 1
    assert blocked(rekeyed) == ""


def test_a_merged_case_points_to_the_persons_case_and_is_never_posted() -> None:
    person = case("c1", RESOLVED, "a1")
    stray = case("c2", BY_NAME, "a2")
    survivor = person.absorbing(stray)
    assert [a.id for a in survivor.alerts] == ["a1", "a2"] and survivor.revision == person.revision + 1
    closed = stray.closed_into(survivor.id, "merged: one person, one case")
    assert closed.merged_into == "c1" and offered_actions(closed) == []
    assert "merged into case c1" in blocked(closed)
    assert not closed.needs_publishing, "a merged case that never had a card gets none"
    shown = closed.model_copy(update={"card": CardRef(conversation_id="19:x", activity_id="1")})
    assert shown.needs_publishing, "a card it had is updated once, to say where the case is"
    card = render_case(shown)
    assert "merged into case c1" in card_text(card) and verbs(card) == set()
    assert check_card(card) == []


def test_the_merge_plan_keeps_the_object_id_case_and_never_merges_two_object_ids() -> None:
    older_upn = case("upn", RESOLVED.model_copy(update={"object_id": None}), "u1")
    by_oid = case("oid", RESOLVED, "o1")
    other_person = case("other", IdentityRef(object_id="ffff", upn="lee.gu@contoso.com"), "x1")
    lone = case("lone", IdentityRef(upn="someone@contoso.com"), "s1")
    plan_ = plan_merges(
        [
            (older_upn, "lee.gu@contoso.com"),
            (by_oid, OID),
            (other_person, "ffff"),
            (lone, "someone@contoso.com"),
        ],
        why="test",
    )
    # The UPN names two object ids: whose it is now is left to Entra ID, nothing is merged.
    assert plan_.closed == [] and plan_.open_cases == []

    plan_ = plan_merges(
        [(older_upn, "lee.gu@contoso.com"), (by_oid, OID), (lone, "someone@contoso.com")], why="t"
    )
    [(kept, key)] = plan_.open_cases
    assert (kept.id, key) == ("oid", OID.lower())
    assert sorted(a.id for a in kept.alerts) == ["o1", "u1"]
    [closed] = plan_.closed
    assert closed.id == "upn" and closed.merged_into == "oid" and "(t)" in closed.closed_reason
