"""The sample cards match the golden files; ``remediation-bot cards dump`` writes the same files.

After an intended change to the card, refresh the golden files and review their diff:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/contract
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from devtools.samples import card_json, catalogue
from tests.support.cardcheck import check_card

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")
REFRESH_HINT = "If the change is intended, run `UPDATE_GOLDEN=1 pytest tests/contract` and review the diff."
CATALOGUE = catalogue()


@pytest.mark.parametrize("state", CATALOGUE.keys())
def test_card_matches_its_golden_file(state: str) -> None:
    path = GOLDEN / f"{state}.json"
    actual = card_json(CATALOGUE[state])
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"no golden file golden/{state}.json for state {state!r}. {REFRESH_HINT}"
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"golden/{state}.json",
                tofile=f"{state} (rendered now)",
            )
        )
        pytest.fail(f"the {state!r} card differs from its golden file. {REFRESH_HINT}\n{diff}", pytrace=False)


def test_every_golden_file_has_a_state() -> None:
    stale = sorted(p for p in GOLDEN.glob("*.json") if p.stem not in CATALOGUE)
    if UPDATE:
        for path in stale:
            path.unlink()
        return
    assert stale == [], f"golden files without a sample state: {[p.name for p in stale]}. {REFRESH_HINT}"


def test_cards_dump_writes_every_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli.main import main

    out = tmp_path / "cards" / "dump"
    assert main(["cards", "dump", str(out)]) == 0

    assert capsys.readouterr().out.strip() == f"wrote {len(CATALOGUE)} cards to {out}"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{state}.json" for state in CATALOGUE)
    for state, card in CATALOGUE.items():
        text = (out / f"{state}.json").read_text(encoding="utf-8")
        assert text == card_json(card)
        assert text.endswith("}\n")
        written: dict[str, Any] = json.loads(text)
        assert check_card(written) == []


def test_card_json_is_indented_sorted_and_ends_with_a_newline() -> None:
    text = card_json({"version": "1.5", "type": "AdaptiveCard", "body": [{"text": "Adele · Vance"}]})
    assert text == (
        '{\n  "body": [\n    {\n      "text": "Adele · Vance"\n    }\n  ],\n'
        '  "type": "AdaptiveCard",\n  "version": "1.5"\n}\n'
    )
