"""Alert storm benchmark: 10,000 alerts over 1,000 identities in one poll window.

Runs the bot as its own process (``remediation-bot serve``) against the sandbox tenant and the
recording Bot Connector with Teams' rate limits emulated (429 + Retry-After past 7/1 s, 8/2 s,
60/30 s per thread and 50/s per tenant), once through the poller and once through the push
endpoint. Writes ``tests/bench/results/storm.json`` and prints a table.

    make bench                      # both runs
    python -m tests.bench.storm --identities 100 --alerts-per-identity 10   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bot.web.push import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from devtools.sandbox import SandboxTenant
from tests.support.connector import RecordingConnector
from tests.support.harness import install_activity
from tests.support.replica import Replica, free_port, replica_env

RESULTS = Path(__file__).parent / "results" / "storm.json"
SECRET = "storm-benchmark-shared-secret-0123456789abcdef"
RESPONDER_ID = "aaaaaaaa-0000-4000-8000-000000000001"
QUIET_SECONDS = 8.0  # no Teams call for this long after the last alert: the storm is settled


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


async def run(mode: str, identities: int, per_identity: int, workdir: Path) -> dict[str, Any]:
    """One storm through ``mode`` (``poll`` or ``push``); returns the measured figures."""
    data = scenario(identities, per_identity)
    tenant = SandboxTenant(
        data if mode == "poll" else {"users": data["users"], "alerts": []}, cert_dir=workdir / "tenant"
    )
    await tenant.start()
    connector = RecordingConnector(emulate_limits=True)
    await connector.start()
    policy = workdir / "policy.yaml"
    policy.write_text(f"responders: {{users: [{RESPONDER_ID}]}}\napprovers: {{users: [{RESPONDER_ID}]}}\n")
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
        if mode == "push":
            async with aiohttp.ClientSession() as http:
                await _push_all(http, bot.url, data)
        await _wait_settled(connector, identities)
        elapsed = _last_call_at(connector) - started
        rss = bot.peak_rss_mb
    finally:
        bot.stop()
        await connector.stop()
        await tenant.stop()
    stored = _stored_alerts(workdir / f"{mode}.db")
    total = identities * per_identity
    graph_calls = len([r for r in tenant.requests if r.path.startswith("/v1.0/")])
    posts = connector.of_kind("create")
    return {
        "mode": mode,
        "alerts": total,
        "identities": identities,
        "channel_posts": len(posts),
        "distinct_identities_posted": len({_identity(p.text) for p in posts}),
        "card_updates": len(connector.of_kind("update")),
        "thread_replies": len(connector.of_kind("send")),
        "lost_alerts": total - stored,
        "graph_calls": graph_calls,
        "graph_calls_per_alert": round(graph_calls / total, 3),
        "seconds_to_last_card": round(elapsed, 1),
        "peak_rss_mb": round(rss, 1),
        "connector_429s": connector.throttled,
        "contract_violations": len(tenant.violations),
    }


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
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        posted = len(connector.of_kind("create"))
        quiet = time.monotonic() - _last_call_at(connector, default=time.monotonic())
        if posted >= identities and quiet >= QUIET_SECONDS:
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
    lines += [f"{k:<{width}}  " + "  ".join(f"{r[k]!s:>10}" for r in results) for k in keys]
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--alerts-per-identity", type=int, default=10)
    parser.add_argument("--modes", default="poll,push")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="storm-") as folder:
        for mode in args.modes.split(","):
            work = Path(folder) / mode
            work.mkdir()
            print(
                f"storm through {mode}: {args.identities} identities × {args.alerts_per_identity} alerts…",
                flush=True,
            )
            results.append(await run(mode, args.identities, args.alerts_per_identity, work))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": results, "at": datetime.now(UTC).isoformat()}, indent=2) + "\n")
    print(_table(results))
    print(f"written to {RESULTS}")
    targets = all(
        r["lost_alerts"] == 0
        and r["channel_posts"] <= r["identities"]
        and r["graph_calls_per_alert"] <= 1.2
        and r["peak_rss_mb"] <= 250
        for r in results
    )
    print("targets met" if targets else "TARGETS MISSED")
    return 0 if targets else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
