"""Every card the bot renders passes the Adaptive Card 1.5 schema and Teams' rules."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain.models import AlertSource, RequestState
from cards.case import render_case
from devtools import samples
from tests.support.cardcheck import check_card

CATALOGUE = samples.catalogue()


@pytest.mark.parametrize("card", CATALOGUE.values(), ids=CATALOGUE.keys())
def test_every_sample_state_renders_a_valid_card(card: dict[str, Any]) -> None:
    assert check_card(card) == []


def test_the_new_case_has_alerts_from_both_sources() -> None:
    case = samples.open_case()
    assert {alert.source for alert in case.alerts} == {
        AlertSource.DEFENDER_FOR_IDENTITY,
        AlertSource.IDENTITY_PROTECTION,
    }
    assert check_card(render_case(case)) == []


@pytest.mark.parametrize("state", list(RequestState), ids=str)
def test_the_case_with_a_request_in_each_state_renders_a_valid_card(state: RequestState) -> None:
    card = render_case(samples.case_for(state), samples.request(state))
    assert check_card(card) == []


def test_a_card_with_a_note_for_the_clicker_is_valid() -> None:
    card = render_case(
        samples.open_case(), note="This card is out of date: it was refreshed; nothing was done."
    )
    assert check_card(card) == []


def test_the_sample_cards_carry_the_teams_extras() -> None:
    for card in CATALOGUE.values():
        assert card["$schema"].startswith("http://adaptivecards.io/schemas/")
        assert card["msteams"] == {"width": "Full"}
