"""How the benchmarks count: alerts that reached the channel, the floor of an approval, percentiles."""

from __future__ import annotations

from typing import Any

from tests.bench.approvals import _union
from tests.bench.common import percentile
from tests.bench.storm import on_channel
from tests.support.connector import ConnectorCall

CHANNEL = "19:incident-response@thread.tacv2"


def _card(who: str, alert_ids: list[str], count: int) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f"Storm User {who}"},
        {"type": "TextBlock", "text": f"Why: {count} alerts"},
    ]
    body += [
        {"type": "TextBlock", "text": f"- [alert](https://security.microsoft.com/alerts/{a}?tid=t)"}
        for a in alert_ids
    ]
    return {"type": "AdaptiveCard", "version": "1.5", "body": body}


def _call(kind: str, activity: str, card: dict[str, Any]) -> ConnectorCall:
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
    if kind == "create":
        body: dict[str, Any] = {"activity": {"type": "message", "attachments": [attachment]}}
    else:
        body = {"type": "message", "attachments": [attachment]}
    return ConnectorCall(kind, f"{CHANNEL};messageid={activity}", activity, body)


def test_an_alert_counts_as_lost_unless_its_id_is_on_the_last_card_of_its_identity() -> None:
    calls = [
        _call("create", "p1", _card("0001", ["storm-1", "storm-2", "storm-3"], 3)),
        # The last card the channel got lists two of three and counts three.
        _call("update", "p1", _card("0001", ["storm-1", "storm-2"], 3)),
        _call("create", "p2", _card("0002", ["storm-10"], 1)),
    ]
    expected = {
        "0001": ["storm-1", "storm-2", "storm-3"],
        "0002": ["storm-1", "storm-10"],
        "0003": ["storm-5"],
    }
    seen = on_channel(calls, expected)
    # storm-3 (dropped from the last card, still counted), storm-1 of 0002 (storm-10 is another
    # id), and 0003's whole card never came.
    assert seen == {"lost": 3, "counted": 1, "no_card": 1}


def test_overlapping_calls_count_once_in_the_floor() -> None:
    assert _union([(0.0, 1.0), (0.5, 1.5), (2.0, 2.25), (2.1, 2.2)]) == 1.75
    assert _union([]) == 0.0


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 99) == 3.0
