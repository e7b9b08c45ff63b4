"""Alert storm benchmark: 10,000 alerts over 1,000 identities, one card per identity and in storm mode.

Runs the bot as its own process (``remediation-bot serve``) against the sandbox tenant and the
recording Bot Connector, through the poller and through the push endpoint, with the limits
Microsoft documents on both sides:

- the connector enforces Teams' rate limits for bots from its own table (see
  ``TEAMS_DOCUMENTED_LIMITS`` in tests/support/connector.py, sources quoted there; a thread is
  the channel, as the page defines a conversation), answering 429 with ``Retry-After``;
- the sandbox throttles Graph as Microsoft documents it for the services the bot calls (see
  devtools/sandbox/throttling.py): Identity Protection 1 request per second per tenant, security
  alerts 150 per minute, identity and access token buckets; 429 with ``Retry-After`` (none from
  Identity Protection, as documented).

Two storms per mode, in the same run:

**One card per identity** (the baseline; policy ``storm: {threshold: 1000000}`` keeps storm
mode off). ``lost_alerts`` is counted from what reached the channel: an alert is lost unless its
id is on its identity's card as the connector last accepted it.

**Storm mode** (:mod:`tests.bench.campaign`; the default storm rule, more than 20 identities in
10 minutes; always 1,000 identities × 10 alerts in the full benchmark). Measured:

- ``stored``: poll — the first moment the store holds every alert of the storm (read every
  0.1 s); push — the moment the last ``POST /api/alerts`` of the storm was answered 202 (the
  endpoint answers after storing). ``card_seconds_after_stored``: from then to the connector
  accepting the first campaign card (post or update) that counts every identity of the storm
  (negative: it was out before the last alert was stored, the card counts identities);
- ``top_level_posts``: conversations the bot created in the channel (connector ``create``
  calls) from the start of the storm until it settled (no Teams call for 8 s once the card
  shows every identity's facts read);
- ``lost_alerts``, counted from the channel. The campaign card lists identities ten per page;
  an alert is *reachable* when (1) its identity is listed on one of the card's pages, read
  page after page through the card's own "Next page" button (real ``Action.Execute`` invokes,
  as a responder pages it), and (2) its id is on that identity's card. A responder gets that
  card with "Show card" (posted in the campaign card's thread): the benchmark clicks it for a
  few identities spread over the pages and checks that the card posted in the thread carries
  the same alert ids as the bot's own card renderer (``cards.case.render_case``) gives for that
  case's stored data; for every identity, the alert ids are then read from that renderer's
  card for its stored case (posting 1,000 cards in the thread would take Teams' limits about
  ten minutes). ``lost_unlisted``: alerts of identities no page lists;
- then "disable all": the first approver asks for Disable account on the card's largest scope
  (every identity) with a reason, the second approves it, both through real invokes with the
  card's data (as clicks). ``disable_all_seconds``: from the second approval's click to every
  non-protected identity disabled in the sandbox tenant *and* verified in the store (its own
  request succeeded, verified by reading back, and its case contained). One identity is a
  protected account (policy ``protected_accounts``): left enabled. ``graph_requests_per_identity``:
  Graph HTTP requests the sandbox received in that time (``/v1.0/...``, a ``POST /$batch``
  counting once, the poller's too) ÷ identities contained. The floor is
  :func:`tests.bench.campaign.disable_floor` (formula and limits cited there): the larger of
  what Graph's identity-and-access quotas allow and the sandbox's own time for the batches
  needed; ``disable_ratio_to_floor`` = measured ÷ floor;
- ``peak_rss_mb``: the bot process's peak resident memory over the whole run (VmHWM).

Writes ``tests/bench/results/storm.json`` (``runs``: one card per identity; ``campaign``:
storm mode) and prints a table.

    make bench                      # both, both modes (part of every benchmark)
    python -m tests.bench.storm --identities 100 --alerts-per-identity 10   # a quick look
    python -m tests.bench.storm --runs campaign --campaign-identities 1000   # storm mode alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bot.web.push import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from devtools.sandbox import SandboxTenant
from tests.bench import campaign
from tests.bench.common import RESULTS as RESULTS_DIR
from tests.support.connector import ConnectorCall, RecordingConnector
from tests.support.harness import install_activity
from tests.support.replica import Replica, free_port, replica_env

RESULTS = RESULTS_DIR / "storm.json"
SECRET = "storm-benchmark-shared-secret-0123456789abcdef"
RESPONDER_ID = "aaaaaaaa-0000-4000-8000-000000000001"
QUIET_SECONDS = 8.0  # no Teams call for this long after the last alert: the storm is settled
GIVE_UP_SECONDS = 120.0  # no Teams call at all for this long: whatever is missing stays missing


def scenario(identities: int, per_identity: int) -> dict[str, Any]:
    """Users and their alerts, all created inside the last poll window."""
    users = [
        {
            "id": f"7a000000-0000-4000-8000-{i:012d}",
            "userPrincipalName": f"user{i:04d}@contoso.com",
            "displayName": f"Storm User {i:04d}",
        }
        for i in range(identities)
    ]
    sources = ("microsoftDefenderForIdentity", "azureAdIdentityProtection")
    alerts = [
        {
            "user": user["userPrincipalName"],
            "serviceSource": sources[(i + n) % 2],
            "title": f"Storm alert {n} for {user['displayName']}",
            "severity": ("low", "medium", "high")[n % 3],
            "minutes_ago": 30 - (n % 25),
        }
        for i, user in enumerate(users)
        for n in range(per_identity)
    ]
    return {"users": users, "alerts": alerts}


async def run(
    mode: str,
    identities: int,
    per_identity: int,
    workdir: Path,
    *,
    graph_throttling: bool = True,
    thread_scope: str = "channel",
) -> dict[str, Any]:
    """One storm through ``mode`` (``poll`` or ``push``); returns the measured figures."""
    data = scenario(identities, per_identity)
    tenant = SandboxTenant(
        data if mode == "poll" else {"users": data["users"], "alerts": []},
        cert_dir=workdir / "tenant",
        throttling=graph_throttling,
    )
    await tenant.start()
    connector = RecordingConnector(documented_limits=True, thread_scope=thread_scope)
    await connector.start()
    policy = workdir / "policy.yaml"
    # One card per identity, as before storm mode: the threshold is above any storm measured here,
    # so this stays the baseline a campaign's figures are compared with.
    policy.write_text(
        f"responders: {{users: [{RESPONDER_ID}]}}\napprovers: {{users: [{RESPONDER_ID}]}}\n"
        "storm: {threshold: 1000000}\n"
    )
    env = replica_env(
        tenant,
        store_url=f"sqlite:///{workdir / f'{mode}.db'}",
        policy=policy,
        port=free_port(),
        PUSH_SHARED_SECRET=SECRET,
        POLL_INTERVAL_SECONDS="5",
    )
    bot = Replica(env, workdir / f"{mode}-bot.log")
    try:
        await bot.wait_healthy()
        status, _ = await bot.post(install_activity(connector.service_url))
        assert status in (200, 201)
        started = time.monotonic()
        expected = _expected(tenant, data, mode)
        total = identities * per_identity
        if mode == "push":
            async with aiohttp.ClientSession() as http:
                await _push_all(http, bot.url, data)
            stored: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            stored.set_result(time.monotonic())
        else:
            stored = asyncio.ensure_future(campaign.wait_stored(workdir / f"{mode}.db", total))
        await _wait_settled(connector, identities)
        stored_at = await stored
        elapsed = _last_call_at(connector) - started
        rss = bot.peak_rss_mb
    finally:
        bot.stop()
        await connector.stop()
        await tenant.stop()
    alerts_stored = _stored_alerts(workdir / f"{mode}.db")
    graph_calls = len([r for r in tenant.requests if r.path.startswith("/v1.0/")])
    posts = connector.of_kind("create")
    seen = on_channel(connector.calls, expected)
    return {
        "mode": mode,
        "thread_scope": thread_scope,
        "graph_throttling": graph_throttling,
        "alerts": total,
        "identities": identities,
        "channel_posts": len(posts),
        "distinct_identities_posted": len({_identity(p.text) for p in posts}),
        "card_updates": len(connector.of_kind("update")),
        "thread_replies": len(connector.of_kind("send")),
        "lost_alerts": seen["lost"],
        "lost_but_counted_on_card": seen["counted"],
        "identities_without_card": seen["no_card"],
        "alerts_stored": alerts_stored,
        "graph_calls": graph_calls,
        "graph_calls_per_alert": round(graph_calls / total, 3),
        "seconds_to_last_card": round(elapsed, 1),
        "last_card_seconds_after_stored": round(_last_call_at(connector) - stored_at, 1),
        "peak_rss_mb": round(rss, 1),
        "connector_429s": connector.throttled,
        "graph_429s": len(tenant.throttled),
        "graph_429s_by_service": dict(Counter(t.service for t in tenant.throttled)),
        "contract_violations": len(tenant.violations),
    }


def _expected(tenant: SandboxTenant, data: dict[str, Any], mode: str) -> dict[str, list[str]]:
    """Identity number -> the ids of its alerts (Graph's in a poll, the pushed ones in a push)."""
    by_upn = {user["userPrincipalName"].lower(): n for n, user in enumerate(data["users"])}
    expected: dict[str, list[str]] = {}
    if mode == "push":
        for n, alert in enumerate(data["alerts"]):
            expected.setdefault(f"{by_upn[alert['user'].lower()]:04d}", []).append(f"storm-{n}")
        return expected
    for alert in tenant.alerts():
        for evidence in alert.get("evidence") or []:
            upn = ((evidence.get("userAccount") or {}).get("userPrincipalName") or "").lower()
            if upn in by_upn:
                expected.setdefault(f"{by_upn[upn]:04d}", []).append(str(alert["id"]))
                break
    return expected


_WHO = re.compile(r"Storm User (\d{4})")
_WHY = re.compile(r"Why: (\d+) alert")


def on_channel(calls: list[ConnectorCall], expected: dict[str, list[str]]) -> dict[str, int]:
    """Alerts missing from the channel: ``lost`` (its id is not on its identity's card as the
    connector last accepted it), of which ``counted`` are still in the card's alert count (the
    card lists a few and says how many more there are); ``no_card``: identities never posted."""
    last: dict[str, dict[str, Any]] = {}
    for call in calls:
        card = call.card
        if call.kind in ("create", "update") and card is not None:
            last[call.activity_id] = card
    cards: dict[str, str] = {}
    for card in last.values():
        text = json.dumps(card)
        who = _WHO.search(text)
        if who:
            cards[who.group(1)] = text
    lost = counted = no_card = 0
    for identity, ids in expected.items():
        text = cards.get(identity)
        if text is None:
            no_card += 1
            lost += len(ids)
            continue
        missing = [i for i in ids if not re.search(re.escape(i) + r"(?![0-9A-Za-z])", text)]
        lost += len(missing)
        why = _WHY.search(text)
        shown = len(ids) - len(missing)
        counted += max(0, min(len(missing), (int(why.group(1)) if why else 0) - shown))
    return {"lost": lost, "counted": counted, "no_card": no_card}


def _identity(text: str) -> str:
    return next((line for line in text.splitlines() if line.startswith("Storm User")), "")


async def _push_all(http: aiohttp.ClientSession, url: str, data: dict[str, Any]) -> None:
    """The whole storm through POST /api/alerts in batches of 100, as a SOAR would send it."""
    now = datetime.now(UTC).isoformat()
    items = [
        {
            "id": f"storm-{n}",
            "title": alert["title"],
            "severity": alert["severity"],
            "source": "sentinel",
            "createdDateTime": now,
            "user": {"userPrincipalName": alert["user"]},
        }
        for n, alert in enumerate(data["alerts"])
    ]
    for start in range(0, len(items), 100):
        body = json.dumps(items[start : start + 100]).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(SECRET, stamp, body),
        }
        async with http.post(f"{url}/api/alerts", data=body, headers=headers) as answer:
            if answer.status != 202:
                raise RuntimeError(f"push refused: {answer.status} {await answer.text()}")


async def _wait_settled(connector: RecordingConnector, identities: int, limit: float = 3600) -> None:
    """Until every identity has its card and Teams has heard nothing for a while, or nothing at
    all reached Teams for :data:`GIVE_UP_SECONDS` (cards missing then count as lost)."""
    deadline = time.monotonic() + limit
    started = time.monotonic()
    while time.monotonic() < deadline:
        posted = len(connector.of_kind("create"))
        quiet = time.monotonic() - _last_call_at(connector, default=started)
        if (posted >= identities and quiet >= QUIET_SECONDS) or quiet >= GIVE_UP_SECONDS:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the storm did not settle in {limit:.0f} s")


def _last_call_at(connector: RecordingConnector, default: float = 0.0) -> float:
    return max((c.at for c in connector.calls), default=default)


def _stored_alerts(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM alerts").fetchone()[0])


def _table(results: list[dict[str, Any]]) -> str:
    keys = [k for k in results[0] if k != "mode"]
    width = max(len(k) for k in keys)
    lines = [f"{'':<{width}}  " + "  ".join(f"{r['mode']:>10}" for r in results)]
    lines += [f"{k:<{width}}  " + "  ".join(f"{r.get(k)!s:>10}" for r in results) for k in keys]
    return "\n".join(lines)


# Storm mode's targets (issue 15): (figure, limit, "max" or "eq").
CAMPAIGN_TARGETS: tuple[tuple[str, float, str], ...] = (
    ("card_seconds_after_stored", 10.0, "max"),
    ("top_level_posts", 3, "max"),
    ("lost_alerts", 0, "eq"),
    ("disable_ratio_to_floor", 1.3, "max"),
    ("graph_requests_per_identity", 0.15, "max"),
    ("peak_rss_mb", 250.0, "max"),
)


def campaign_misses(run: dict[str, Any]) -> list[str]:
    """The storm-mode targets a campaign run missed (a figure it could not measure counts as missed)."""
    missed = []
    for key, limit, kind in CAMPAIGN_TARGETS:
        value = run.get(key)
        ok = isinstance(value, int | float) and (value <= limit if kind == "max" else value == limit)
        if not ok:
            missed.append(f"{run['mode']}: {key} {value} (target {'≤' if kind == 'max' else '='} {limit:g})")
    if not run.get("disable_all_finished") or not run.get("protected_left_enabled"):
        missed.append(f"{run['mode']}: disable all did not finish as it must")
    return missed


def _load() -> tuple[float, ...]:
    return tuple(round(x, 2) for x in os.getloadavg())


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--identities", type=int, default=1000, help="one card per identity: identities")
    parser.add_argument("--alerts-per-identity", type=int, default=10)
    parser.add_argument("--modes", default="poll,push")
    parser.add_argument(
        "--runs", default="one-card,campaign", help="which storms: one-card (the baseline), campaign"
    )
    parser.add_argument("--campaign-identities", type=int, default=1000, help="storm mode: identities")
    parser.add_argument("--campaign-alerts-per-identity", type=int, default=10)
    parser.add_argument(
        "--no-graph-throttling", action="store_true", help="do not emulate Graph's documented throttling"
    )
    parser.add_argument(
        "--thread-scope",
        choices=("channel", "conversation"),
        default="channel",
        help="what Teams' per-thread limits count: the channel (as documented) or each reply thread",
    )
    args = parser.parse_args(argv)
    runs = set(args.runs.split(","))
    results: list[dict[str, Any]] = []
    campaigns: list[dict[str, Any]] = []
    load_at_start = _load()
    with tempfile.TemporaryDirectory(prefix="storm-") as folder:
        for mode in args.modes.split(","):
            if "one-card" in runs:
                work = Path(folder) / mode
                work.mkdir()
                print(
                    f"storm through {mode}, one card per identity: {args.identities} identities × "
                    f"{args.alerts_per_identity} alerts…",
                    flush=True,
                )
                results.append(
                    await run(
                        mode,
                        args.identities,
                        args.alerts_per_identity,
                        work,
                        graph_throttling=not args.no_graph_throttling,
                        thread_scope=args.thread_scope,
                    )
                )
                results[-1]["load_average_after"] = list(_load())
            if "campaign" in runs:
                work = Path(folder) / f"campaign-{mode}"
                work.mkdir()
                print(
                    f"storm through {mode}, storm mode: {args.campaign_identities} identities × "
                    f"{args.campaign_alerts_per_identity} alerts, then disable all…",
                    flush=True,
                )
                campaigns.append(
                    await campaign.run(
                        mode,
                        args.campaign_identities,
                        args.campaign_alerts_per_identity,
                        work,
                        graph_throttling=not args.no_graph_throttling,
                    )
                )
                campaigns[-1]["load_average_after"] = list(_load())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "runs": results,
                "campaign": campaigns,
                "load_average_at_start": list(load_at_start),
                "cpus": os.cpu_count(),
                "at": datetime.now(UTC).isoformat(),
            },
            indent=2,
        )
        + "\n"
    )
    if results:
        print(_table(results))
    if campaigns:
        print(_table(campaigns))
    print(f"written to {RESULTS}")
    targets = all(
        r["lost_alerts"] == 0
        and r["channel_posts"] <= r["identities"]
        and r["graph_calls_per_alert"] <= 1.2
        and r["peak_rss_mb"] <= 250
        for r in results
    )
    missed = [m for c in campaigns for m in campaign_misses(c)]
    for line in missed:
        print(f"missed: {line}")
    met = targets and not missed
    print("targets met" if met else "TARGETS MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
