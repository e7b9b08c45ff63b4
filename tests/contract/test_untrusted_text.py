"""Untrusted text is inert in every renderer: property tests over generated hostile strings.

Every untrusted field of a case, its alerts, a request, its result, a refusal note, audit events
and chat arguments is filled from generated strings (attack fragments mixed with arbitrary
Unicode). Whatever they are, no card, thread reply, request note, escalation note, alert comment
or chat answer contains a link, mention, HTML, heading, list, code or emphasis the bot did not
write, nor an ``Action.OpenUrl`` to a host off the allow-list (tests/support/inertcheck.py).
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.domain.models import Actor, CardRef, RequestState
from cards.case import Viewer, render_case
from cards.chat import render_history, render_pending, render_sentence, render_unknown_command
from cards.replies import escalation_note, render_alert_comment, render_request_note, render_result_reply
from cards.text import plain
from devtools.samples import T0
from tests.contract.untrusted import HOSTILE, World, build, neutral, supplier
from tests.support.cardcheck import check_card
from tests.support.inertcheck import card_problems, message_problems, plain_problems

NOW = T0 + timedelta(minutes=12)


def _shown(value: str) -> str:
    # A value that shows as nothing (only invisible characters) would take other branches than
    # the neutral "x"; those are covered by tests/unit/test_text.py.
    return value if plain(value, 500) else f"{value}A"


fragment = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=12),
    st.text(alphabet="[]()<>!#*_~`|\\/:.@&;-+= \nahtpsw0123456789", max_size=16),
)
untrusted = st.lists(fragment, min_size=1, max_size=4).map("".join).map(_shown)
values = st.lists(untrusted, min_size=1, max_size=12)


def _cards(world: World) -> list[dict[str, object]]:
    approver = Viewer(actor=Actor(object_id="approver"), responder=True, approver=True)
    return [
        render_case(world.case),
        render_case(world.case, world.request, note=world.note),
        render_case(world.case, world.request, viewer=approver, refresh_user_ids=[world.word]),
    ]


def _messages(world: World) -> list[str]:
    return [
        render_result_reply(world.case, world.request),
        render_result_reply(world.case, world.request, update=True),
        render_request_note(world.case, world.request, now=NOW),
        escalation_note(world.case, world.alert) or "",
        render_pending([(world.case, world.request)], world.channel),
        render_history(world.upn, world.events),
        render_sentence(world.sentence),
        render_unknown_command(world.word),
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=values, state=st.sampled_from(list(RequestState)), alerts=st.integers(1, 7))
@example(values=[_shown(v) for v in HOSTILE], state=RequestState.PENDING, alerts=2)
@example(values=[_shown(v) for v in HOSTILE], state=RequestState.REJECTED, alerts=6)
def test_no_generated_string_makes_markup_in_any_renderer(
    values: list[str], state: RequestState, alerts: int
) -> None:
    world = build(supplier(values), state=state, alerts=alerts)
    calm = build(neutral(), state=state, alerts=alerts)

    for card in _cards(world):
        assert card_problems(card) == []
        assert check_card(card) == []
    for text, harmless in zip(_messages(world), _messages(calm), strict=True):
        assert message_problems(text, harmless) == []
    assert plain_problems(render_alert_comment(world.case, world.request), "alert comment") == []


@given(channel_id=untrusted, activity_id=untrusted)
def test_a_card_link_in_the_pending_list_is_only_ever_to_teams(channel_id: str, activity_id: str) -> None:
    world = build(neutral(), state=RequestState.PENDING)
    case = world.case.model_copy(update={"card": CardRef(conversation_id="c", activity_id=activity_id)})
    channel = world.channel.model_copy(update={"channel_id": channel_id})
    assert message_problems(render_pending([(case, world.request)], channel)) == []


def _campaign(world: World) -> tuple[dict[str, object], list[str]]:
    """The campaign card of three members of ``world`` (hostile names, titles, techniques and IPs
    shared, so they cluster), a bulk request on them, its thread note and its summary."""
    from bot.domain.campaigns import BulkRequest, BulkTarget, Campaign, ItemOutcome
    from bot.domain.models import IdentityRef
    from bot.services.bulk import summary_text
    from bot.services.campaigns import bulk_note
    from cards.campaign import render_campaign
    from devtools.samples import CAMPAIGN_POLICY

    alerts = tuple(
        a.model_copy(update={"source_ips": (world.word,), "incident_id": world.word})
        for a in world.case.alerts
    )
    members = [
        world.case.model_copy(
            update={
                "id": f"case-{i}",
                "identity": IdentityRef(object_id=f"id-{i}", upn=world.upn, display_name=world.sentence),
                "alerts": alerts,
                "privileged_reason": world.word if i == 0 else "",
                "campaign_id": "c1",
            }
        )
        for i in range(3)
    ]
    campaign = Campaign(id="c1", opened_at=T0, last_joined_at=T0, threshold=20, window_seconds=600, members=3)
    targets = tuple(
        BulkTarget(
            case_id=m.id, object_id=f"id-{i}", upn=world.upn, label=world.word, privileged_reason=world.word
        )
        for i, m in enumerate(members)
    )
    bulk = BulkRequest(
        id="b1",
        campaign_id="c1",
        scope="severity:high",
        scope_label=world.word,
        approval=world.request.model_copy(update={"case_id": "c1"}),
        targets=targets,
        protected=(world.sentence,),
        target_hash="0" * 64,
        outcomes={t.case_id: ItemOutcome(outcome="failed", detail=world.note) for t in targets},
    )
    card = render_campaign(campaign, members, [bulk], CAMPAIGN_POLICY, note=world.note)
    return card, [bulk_note(bulk), summary_text(bulk)]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=values, state=st.sampled_from(list(RequestState)))
@example(values=[_shown(v) for v in HOSTILE], state=RequestState.PENDING)
def test_no_generated_string_makes_markup_on_the_campaign_card_or_its_thread(
    values: list[str], state: RequestState
) -> None:
    card, texts = _campaign(build(supplier(values), state=state, alerts=3))
    _, calm = _campaign(build(neutral(), state=state, alerts=3))
    assert card_problems(card) == []
    assert check_card(card) == []
    for text, harmless in zip(texts, calm, strict=True):
        assert message_problems(text, harmless) == []
