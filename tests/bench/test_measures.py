"""How the benchmarks count: alerts that reached the channel, the floors of an approval and of
"disable all", percentiles."""

from __future__ import annotations

from typing import Any

from tests.bench.approvals import _union
from tests.bench.campaign import (
    campaign_calls,
    disable_floor,
    first_complete_card,
    per_batch,
    reachable,
    union,
)
from tests.bench.common import percentile
from tests.bench.storm import campaign_misses, on_channel
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


def _campaign_call(kind: str, identities: int, at: float) -> ConnectorCall:
    card = {
        "type": "AdaptiveCard",
        "body": [
            {"type": "TextBlock", "text": "STORM · Campaign"},
            {"type": "TextBlock", "text": f"{identities} compromised identities"},
        ],
    }
    call = _call(kind, "c1", card)
    call.at = at
    return call


def test_the_campaign_card_counts_when_it_first_shows_every_identity() -> None:
    calls = [
        _campaign_call("create", 21, 1.0),
        _call("create", "p9", _card("0009", ["storm-1"], 1)),  # not the campaign card
        _campaign_call("update", 999, 2.0),
        _campaign_call("update", 1000, 3.0),
        _campaign_call("update", 1000, 4.0),
    ]
    assert [c.at for c in campaign_calls(calls)] == [1.0, 2.0, 3.0, 4.0]
    assert first_complete_card(calls, 1000) == 3.0
    assert first_complete_card(calls, 1001) is None


def test_an_alert_is_reachable_only_through_a_listed_identity_whose_card_carries_its_id() -> None:
    expected = {"0001": ["storm-1", "storm-2"], "0002": ["storm-3"], "0003": ["storm-4"], "0004": ["storm-5"]}
    cards = {"0001": '{"text": "storm-1 storm-20"}', "0002": '{"text": "storm-3"}', "0003": "{}"}
    # 0001 lacks storm-2 (storm-20 is another id); 0003 is not listed on any page; 0004 has no card.
    seen = reachable(["0001", "0002", "0004"], cards, expected)
    assert seen == {"lost": 3, "unlisted": 1, "no_card": 1}


def test_the_disable_floor_is_the_larger_of_graphs_quotas_and_the_sandboxs_own_time() -> None:
    # 999 identities in a tenant of 1,000 users (size L: 8,000 units per 10 s; 3,000 writes per
    # 150 s): 1,998 units and 999 writes fit in full buckets, so the limits allow any speed.
    floor = disable_floor(999, tenant_users=1000, patch_batch_seconds=0.05, read_batch_seconds=0.1)
    assert (floor.requests, floor.limits_seconds) == (100, 0.0)
    assert floor.service_seconds == floor.seconds == 50 * 0.05 + 50 * 0.1
    # 5,000 identities: 10,000 units (2,000 past 8,000 at 800 per s: 2.5 s) and 5,000 writes
    # (2,000 past 3,000 at 20 per s: 100 s).
    floor = disable_floor(5000, tenant_users=6000, patch_batch_seconds=0.0, read_batch_seconds=0.0)
    assert floor.limits_seconds == floor.seconds == 100.0
    # A tenant under 50 users has 3,500 units per 10 s.
    small = disable_floor(40, tenant_users=45, patch_batch_seconds=0.01, read_batch_seconds=0.01)
    assert (small.requests, small.limits_seconds, small.seconds) == (4, 0.0, 0.04)


def test_the_sandboxs_time_per_batch_counts_overlapping_batches_once() -> None:
    assert union([(0.0, 1.0), (0.5, 1.5), (3.0, 4.0)]) == 2.5
    assert per_batch([(0.0, 1.0), (0.5, 1.5), (3.0, 4.0)]) == 2.5 / 3
    assert per_batch([]) == 0.0


def test_a_campaign_run_misses_a_target_it_could_not_measure() -> None:
    met = {
        "mode": "poll",
        "card_seconds_after_stored": 2.0,
        "top_level_posts": 1,
        "lost_alerts": 0,
        "disable_ratio_to_floor": 1.2,
        "graph_requests_per_identity": 0.11,
        "peak_rss_mb": 180.0,
        "disable_all_finished": True,
        "protected_left_enabled": True,
    }
    assert campaign_misses(met) == []
    missed = campaign_misses({**met, "card_seconds_after_stored": None, "top_level_posts": 4})
    assert missed == [
        "poll: card_seconds_after_stored None (target ≤ 10)",
        "poll: top_level_posts 4 (target ≤ 3)",
    ]
    assert campaign_misses({**met, "protected_left_enabled": False}) == [
        "poll: disable all did not finish as it must"
    ]
