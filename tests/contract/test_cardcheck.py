"""check_card rejects each kind of bad card, with a message that points at the problem."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.cardcheck import SCHEMA_PATH, check_card, schema_validator

SCHEMA_SHA256 = "d42107e3a08f3d1ec5c35f82e497a5e349812bb0d86e90d5b85808999ae52a1a"
URL = "https://contoso.com/adele.png"


def card(*body: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A valid Teams card like ours ($schema and msteams included), with ``body`` and overrides."""
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": list(body) or [{"type": "TextBlock", "text": "Adele Vance", "wrap": True}],
        "actions": [
            {
                "type": "Action.Execute",
                "title": "Disable account",
                "verb": "disableAccount",
                "data": {"a": 1},
            },
            {"type": "Action.OpenUrl", "title": "Open user in Entra", "url": "https://entra.microsoft.com"},
        ],
        "msteams": {"width": "Full"},
        **top,
    }


def test_the_vendored_schema_is_the_documented_file() -> None:
    digest = hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, (
        "the schema changed: it must stay byte-identical (ADAPTIVE-CARD-SCHEMA.md)"
    )
    doc = (SCHEMA_PATH.parent / "ADAPTIVE-CARD-SCHEMA.md").read_text(encoding="utf-8")
    assert SCHEMA_SHA256 in doc


def test_the_schema_is_checked_with_its_own_draft() -> None:
    assert type(schema_validator()).__name__ == "Draft6Validator"


def test_a_good_card_passes() -> None:
    rich = card(
        {
            "type": "Container",
            "style": "emphasis",
            "items": [
                {"type": "TextBlock", "text": "HIGH · Compromised identity", "color": "Attention"},
                {"type": "FactSet", "facts": [{"title": "Account", "value": "Enabled"}]},
                {"type": "Image", "url": URL, "width": "1024px", "height": "64px", "altText": "Adele"},
                {"type": "ImageSet", "images": [{"url": URL, "width": "1024px"}]},
            ],
        },
        {"type": "Input.Text", "id": "reason", "label": "Reason", "isRequired": True, "maxLength": 500},
        refresh={
            "action": {"type": "Action.Execute", "verb": "refresh"},
            "userIds": [f"29:{i}" for i in range(60)],
        },
    )
    assert check_card(card()) == []
    assert check_card(rich) == []
    assert check_card({k: v for k, v in card().items() if k not in ("$schema", "msteams")}) == []


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        pytest.param(
            card({"type": "TextBlock", "wrap": True}), r"\$\.body\[0\]: 'text' is a required", id="no-text"
        ),
        pytest.param(
            card({"type": "Container", "items": [{"type": "Blink", "text": "x"}]}),
            r"\$\.body\[0\]\.items\[0\]: unknown type 'Blink'",
            id="unknown-element",
        ),
        pytest.param(
            card(actions=[{"type": "Action.Frobnicate", "title": "x"}]),
            r"\$\.actions\[0\]: unknown type 'Action\.Frobnicate'",
            id="unknown-action",
        ),
        pytest.param(card({"text": "x"}), r"\$\.body\[0\]: 'type' is missing", id="element-without-type"),
        pytest.param(
            card({"type": "TextBlock", "text": "x", "colour": "red"}),
            r"'colour' was unexpected",
            id="unknown-property",
        ),
        pytest.param(
            card({"type": "TextBlock", "text": "x", "wrap": "yes"}),
            r"\$\.body\[0\]\.wrap: 'yes' is not of type 'boolean'",
            id="wrong-type",
        ),
        pytest.param(card(speak=1), r"\$\.speak: 1 is not of type 'string'", id="bad-top-level-property"),
        pytest.param(card(colour="red"), r"\$: .*'colour' was unexpected", id="unknown-top-level-property"),
        pytest.param(card(version="9.9"), r"\$\.version: '9\.9' is newer than 1\.5", id="version-9.9"),
        pytest.param(card(version="1.6"), r"\$\.version: '1\.6' is newer than 1\.5", id="version-1.6"),
        pytest.param(
            card(version="latest"), r"\$\.version: 'latest' is not a version", id="version-not-a-number"
        ),
        pytest.param(
            {k: v for k, v in card().items() if k != "version"}, r"\$\.version: missing", id="no-version"
        ),
        pytest.param(card(type="HeroCard"), r"\$\.type: must be 'AdaptiveCard'", id="not-an-adaptive-card"),
        pytest.param(
            card(actions=[{"type": "Action.Submit", "title": "Disable", "data": {"verb": "disable"}}]),
            r"\$\.actions\[0\]: Action\.Submit is not allowed",
            id="submit",
        ),
        pytest.param(
            card(
                {
                    "type": "ActionSet",
                    "actions": [
                        {
                            "type": "Action.ShowCard",
                            "title": "More",
                            "card": {"type": "AdaptiveCard", "actions": [{"type": "Action.Submit"}]},
                        }
                    ],
                }
            ),
            r"\$\.body\[0\]\.actions\[0\]\.card\.actions\[0\]: Action\.Submit is not allowed",
            id="submit-nested-in-show-card",
        ),
        pytest.param(
            card({"type": "Container", "items": [], "selectAction": {"type": "Action.Submit"}}),
            r"\$\.body\[0\]\.selectAction: Action\.Submit is not allowed",
            id="submit-as-select-action",
        ),
        pytest.param(
            card(
                {"type": "Media", "sources": [{"mimeType": "video/mp4", "url": "https://contoso.com/a.mp4"}]}
            ),
            r"\$\.body\[0\]: Media elements are not allowed",
            id="media",
        ),
        pytest.param(
            card(actions=[{"type": "Action.Execute", "title": "Disable account"}]),
            r"\$\.actions\[0\]: Action\.Execute needs a verb",
            id="execute-without-verb",
        ),
        pytest.param(
            card(actions=[{"type": "Action.Execute", "title": "Disable account", "verb": " "}]),
            r"\$\.actions\[0\]: Action\.Execute needs a verb",
            id="execute-with-blank-verb",
        ),
        pytest.param(
            card(refresh={"action": {"type": "Action.Execute", "title": "x"}}),
            r"\$\.refresh\.action: Action\.Execute needs a verb",
            id="refresh-without-verb",
        ),
        pytest.param(
            card({"type": "Image", "url": URL, "width": "1025px"}),
            r"\$\.body\[0\]\.width: '1025px' is larger than",
            id="image-too-wide",
        ),
        pytest.param(
            card({"type": "Image", "url": URL, "height": "2048px"}),
            r"\$\.body\[0\]\.height: '2048px' is larger than",
            id="image-too-tall",
        ),
        pytest.param(
            card({"type": "ImageSet", "images": [{"url": URL, "width": "1500px"}]}),
            r"\$\.body\[0\]\.images\[0\]\.width: '1500px' is larger than",
            id="image-in-set-too-wide",
        ),
        pytest.param(
            card(refresh={"action": {"type": "Action.Execute", "verb": "refresh"}, "userIds": ["u"] * 61}),
            r"\$\.refresh\.userIds: 61 entries",
            id="refresh-for-too-many-users",
        ),
        pytest.param(
            card({"type": "TextBlock", "text": "x" * (28 * 1024)}),
            r"\$: the card is \d+ bytes of JSON; Teams takes at most 28672",
            id="over-28-KB",
        ),
        pytest.param(card(msteams={"width": "Half"}), r"\$\.msteams\.width: 'Half'", id="msteams-width"),
        pytest.param(card(msteams="Full"), r"\$\.msteams: must be an object", id="msteams-not-an-object"),
        pytest.param(
            card(msteams={"wdith": "Full"}), r"\$\.msteams: unknown property 'wdith'", id="msteams-typo"
        ),
    ],
)
def test_a_bad_card_is_rejected_with_a_pointed_message(bad: dict[str, Any], expected: str) -> None:
    problems = check_card(bad)
    assert any(re.search(expected, p) for p in problems), problems


def test_every_problem_is_reported_not_only_the_first() -> None:
    bad = card(
        {"type": "TextBlock"},
        {"type": "Media", "sources": []},
        version="2.0",
        actions=[{"type": "Action.Submit"}, {"type": "Action.Execute"}],
    )
    problems = check_card(bad)
    assert len(problems) >= 5, problems


def test_a_card_just_under_the_size_limit_passes() -> None:
    base = card({"type": "TextBlock", "text": ""})
    room = 28 * 1024 - _size(base)
    assert check_card(card({"type": "TextBlock", "text": "x" * room})) == []
    assert check_card(card({"type": "TextBlock", "text": "x" * (room + 1)})) != []


def test_a_non_object_is_not_a_card() -> None:
    not_a_card: Any = []  # what a caller might pass despite the signature
    assert check_card(not_a_card) == ["$: a card is a JSON object, not list"]


def _size(value: dict[str, Any]) -> int:
    return len(json.dumps(value).encode("utf-8"))


def test_schema_path_points_into_this_folder() -> None:
    assert SCHEMA_PATH.parent == Path(__file__).resolve().parent
