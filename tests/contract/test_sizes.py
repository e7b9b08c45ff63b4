"""Every card and reply fits Teams' message limit whatever the input: a property test with huge values.

Sizes are measured the way the Bot Connector receives them: the activity botbuilder builds for
the post, update or reply, serialized by its own models and sent as JSON with non-ASCII escaped
(``json.dumps`` defaults, as its HTTP client does). Inputs go far past anything real: names of
100,000 characters, 1,000 alerts with long titles, thousands of techniques, sign-in risks, steps,
sign-offs and audit events, in characters that grow most when escaped (emoji, ``&``, ``[``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botbuilder.core import CardFactory, MessageFactory
from botbuilder.schema import ChannelAccount, ConversationAccount, ConversationParameters
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.models import RequestState
from cards.case import DEFAULT_LINKS, _render, render_case
from cards.chat import render_history, render_pending, render_sentence, render_unknown_command
from cards.replies import (
    MAX_COMMENT_CHARS,
    _request_note,
    _result_reply,
    escalation_note,
    render_alert_comment,
    render_request_note,
    render_result_reply,
)
from cards.text import ELLIPSIS, LEVELS, MAX_MESSAGE_BYTES, MESSAGE_BUDGET, json_size
from devtools.samples import T0
from tests.contract.untrusted import World, build
from tests.support.cardcheck import check_card

CHANNEL = "19:" + "c" * 60 + "@thread.tacv2"
THREAD = f"{CHANNEL};messageid=1764060000000"
# Characters that cost most as JSON (12 bytes for an emoji, 6 for other non-ASCII) or as
# markdown references (5 for "&" or "[").
UNITS = ["a", "é", "😀", "&", "[", "\u202e", "a.io ", "<at>x</at>", " "]


def _sent(activity: Any) -> int:
    """Bytes of the JSON the bot sends for ``activity`` (a botbuilder model)."""
    return len(json.dumps(activity.serialize()).encode("utf-8"))


def card_post_bytes(card: dict[str, Any]) -> int:
    """The larger of a new post (create conversation) and an update of the card."""
    activity = MessageFactory.attachment(CardFactory.adaptive_card(card))
    post = ConversationParameters(
        is_group=True,
        bot=ChannelAccount(id="28:" + "b" * 36, name="Remediation Bot"),
        channel_data={"channel": {"id": CHANNEL}, "tenant": {"id": "t" * 36}},
        tenant_id="t" * 36,
        activity=activity,
    )
    update = MessageFactory.attachment(CardFactory.adaptive_card(card))
    update.id = "1764060000000"
    update.conversation = ConversationAccount(id=THREAD, is_group=True)
    return max(_sent(post), _sent(update))


def reply_bytes(text: str) -> int:
    """A thread reply or chat answer as sent."""
    message = MessageFactory.text(text)
    message.conversation = ConversationAccount(id=THREAD, is_group=True)
    message.reply_to_id = "1764060000000"
    return _sent(message)


def _huge(unit: str, length: int) -> Any:
    value = (unit * (length // len(unit) + 1))[:length]
    return lambda: value


def _assert_fits_card(card: dict[str, Any]) -> None:
    assert json_size(card) <= MESSAGE_BUDGET
    assert card_post_bytes(card) <= MAX_MESSAGE_BYTES
    assert check_card(card) == []


def _assert_fits_reply(text: str) -> None:
    assert json_size(text) <= MESSAGE_BUDGET
    assert reply_bytes(text) <= MAX_MESSAGE_BYTES


def _world(unit: str, length: int, alerts: int, many: int, state: RequestState) -> World:
    return build(_huge(unit, length), alerts=alerts, many=many, state=state)


@settings(max_examples=30, deadline=None)
@given(
    unit=st.sampled_from(UNITS),
    length=st.sampled_from([1, 300, 5_000, 100_000]),
    alerts=st.sampled_from([1, 6, 1_000]),
    many=st.sampled_from([1, 2, 60, 2_000]),
    state=st.sampled_from(list(RequestState)),
)
def test_every_card_and_reply_fits_whatever_the_input(
    unit: str, length: int, alerts: int, many: int, state: RequestState
) -> None:
    world = _world(unit, length, alerts, many, state)
    requests = [(world.case, world.request)] * many

    _assert_fits_card(render_case(world.case))
    _assert_fits_card(
        render_case(world.case, world.request, note=world.note, refresh_user_ids=[world.word] * 100)
    )
    for text in (
        render_result_reply(world.case, world.request),
        render_request_note(world.case, world.request, now=T0),
        escalation_note(world.case, world.alert) or "",
        render_pending(requests, world.channel),
        render_history(world.upn, world.events),
        render_sentence(world.sentence),
        render_unknown_command(world.word),
    ):
        _assert_fits_reply(text)
    assert len(render_alert_comment(world.case, world.request)) <= MAX_COMMENT_CHARS


@pytest.mark.parametrize("unit", ["😀", "&", "a"])
def test_the_tightest_limits_fit_the_worst_case(unit: str) -> None:
    """Every field at its limit in the costliest characters, and 60 Teams ids to refresh."""
    world = _world(unit, 100_000, 1_000, 2_000, RequestState.PENDING)
    tightest = LEVELS[-1]
    card = _render(
        world.case, world.request, DEFAULT_LINKS, world.note, None, ["29:" + "i" * 125] * 60, tightest
    )
    assert json_size(card) <= MESSAGE_BUDGET
    for state in RequestState:
        request = world.request.model_copy(update={"state": state})
        assert json_size(_result_reply(world.case, request, DEFAULT_LINKS, True, tightest)) <= MESSAGE_BUDGET
        assert json_size(_request_note(world.case, request, T0, tightest)) <= MESSAGE_BUDGET


def test_a_thousand_alerts_are_capped_with_and_n_more() -> None:
    world = _world("Pass-the-ticket from FIN-SRV-07 ", 2_000, 1_000, 2, RequestState.PENDING)
    card = render_case(world.case, world.request)
    _assert_fits_card(card)
    text = json.dumps(card, ensure_ascii=False)
    assert "Why: 1000 alerts" in text
    assert "… and 995 more in Defender" in text
    assert text.count(ELLIPSIS) >= 5, "each long title is cut with an ellipsis"


def test_a_name_of_100k_characters_is_cut_with_an_ellipsis() -> None:
    world = _world("Mallory ", 100_000, 1, 1, RequestState.PENDING)
    card = render_case(world.case, world.request)
    _assert_fits_card(card)
    header = card["body"][0]["items"][1]["inlines"][0]["text"]
    assert header.startswith("Mallory Mallory") and header.endswith(ELLIPSIS)
    reply = render_request_note(world.case, world.request, now=T0)
    _assert_fits_reply(reply)
    assert ELLIPSIS in reply


def _campaign_world(unit: str, length: int, members: int, state: RequestState) -> tuple[Any, ...]:
    """A campaign of ``members`` identities whose every untrusted field is huge, with three bulk
    requests of every identity (half of them protected), in ``state``."""
    from bot.domain.campaigns import BulkRequest, BulkTarget, Campaign, ItemOutcome
    from bot.domain.models import Case, IdentityRef
    from devtools.samples import CAMPAIGN_POLICY

    world = _world(unit, length, 6, 60, state)
    cases = [
        world.case.model_copy(
            update={
                "id": f"case{i:08d}",
                "identity": IdentityRef(
                    object_id=f"{i}", upn=f"{world.upn}{i}", display_name=world.case.identity.display_name
                ),
                "protected": i % 2 == 0,
                "privileged_reason": world.word if i % 3 == 0 else "",
                "campaign_id": "c1",
            }
        )
        for i in range(members)
    ]
    campaign = Campaign(
        id="c1", opened_at=T0, last_joined_at=T0, threshold=20, window_seconds=600, members=members
    )
    targets = tuple(
        BulkTarget(
            case_id=c.id, object_id=f"{i}", upn=world.upn, label=world.word, privileged_reason=world.word
        )
        for i, c in enumerate(cases)
    )
    bulk = BulkRequest(
        id="b1",
        campaign_id="c1",
        scope="severity:high",
        scope_label=world.word,
        approval=world.request.model_copy(update={"case_id": "c1", "decision_note": world.note}),
        targets=targets,
        protected=tuple(world.word for _ in cases),
        target_hash="f" * 64,
        outcomes={t.case_id: ItemOutcome(outcome="failed", detail=world.note) for t in targets[::2]},
    )
    bulks = [bulk.model_copy(update={"id": f"b{i}"}) for i in range(5)]
    assert all(isinstance(c, Case) for c in cases)
    return campaign, cases, bulks, CAMPAIGN_POLICY, world.note


@pytest.mark.parametrize("members", [1, 25, 1_000])
@pytest.mark.parametrize("unit", ["😀", "&", "a.io "])
@pytest.mark.parametrize("state", [RequestState.PENDING, RequestState.FAILED])
def test_the_campaign_card_fits_at_any_size(members: int, unit: str, state: RequestState) -> None:
    from cards.campaign import render_campaign

    campaign, cases, bulks, policy, note = _campaign_world(unit, 5_000, members, state)
    for page in (0, 1, 10_000):
        _assert_fits_card(render_campaign(campaign, cases, bulks, policy, page=page, note=note))
    # With the approval page on, each bulk request waiting for decisions links to its page.
    base = "https://remediation-bot.contoso.example"
    card = render_campaign(campaign, cases, bulks, policy, note=note, page_url=base)
    _assert_fits_card(card)
    if state is RequestState.PENDING:
        assert f"{base}/approve/bulk/b4" in str(card)


def _alert_ids_line(card: dict[str, Any]) -> list[str]:
    """The texts of the card's "Alert ids" line (with the details, inside their container)."""
    blocks = list(card["body"])
    while blocks:
        block = blocks.pop(0)
        blocks[:0] = block.get("items", [])
        texts = [run.get("text", "") for run in block.get("inlines", [])]
        if texts[:1] == ["Alert ids: "]:
            return texts
    raise AssertionError("the card has no alert ids line")


def _with_ids(world: World, count: int) -> Any:
    """``world``'s case with ``count`` alerts whose ids look like Defender's (40 characters)."""
    template = world.case.alerts[0]
    alerts = tuple(template.model_copy(update={"id": f"da{n:038d}"}) for n in range(count))
    return world.case.model_copy(update={"alerts": alerts})


@pytest.mark.parametrize("count", [1, 10, 150])
def test_every_alert_id_of_a_case_is_on_its_card(count: int) -> None:
    case = _with_ids(build(_huge("Leaked credentials ", 3), alerts=1), count)
    card = render_case(case)
    _assert_fits_card(card)
    line = _alert_ids_line(card)
    # Newest first (these arrived together: by id).
    assert line[1].split(", ") == [f"da{n:038d}" for n in reversed(range(count))]
    assert len(line) == 2, "nothing left out"


def test_a_case_with_more_alerts_than_a_card_carries_names_how_many_ids_are_left_out() -> None:
    case = _with_ids(build(_huge("Leaked credentials ", 3), alerts=1), 1_000)
    card = render_case(case)
    _assert_fits_card(card)
    line = _alert_ids_line(card)
    named = len(line[1].split(", "))
    assert 150 <= named < 1_000
    assert line[2] == f" and {1_000 - named} more"
