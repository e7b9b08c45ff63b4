"""The storm in storm mode: one campaign card, "disable all" through two approvers, timed.

What is measured, and how, is in :mod:`tests.bench.storm`'s docstring (the storm benchmark runs
this beside the one-card-per-identity storm, in the same run). This module drives the campaign
run and holds its measuring helpers (unit-tested in tests/bench/test_measures.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from devtools.sandbox import SandboxTenant
from devtools.sandbox.state import RecordedRequest
from devtools.sandbox.throttling import (
    IDENTITY_AND_ACCESS_UNITS,
    IDENTITY_AND_ACCESS_WRITES,
    identity_cost,
    tenant_size,
)
from tests.support.connector import ConnectorCall, RecordingConnector
from tests.support.harness import card_action, install_activity, invoke_activity
from tests.support.replica import Replica, free_port, replica_env

# Two people who are both responders and approvers: the first asks for "disable all" (and so
# signs it off once), the second approves it (the second of the two distinct sign-offs).
ALEX = {"id": "aaaaaaaa-0000-4000-8000-000000000001", "name": "Alex Wilber"}
MEGAN = {"id": "aaaaaaaa-0000-4000-8000-000000000002", "name": "Megan Bowen"}
CAMPAIGN_MARK = "STORM · Campaign"
BATCH = 20  # requests per Graph JSON batch (https://learn.microsoft.com/graph/json-batching)
QUIET_SECONDS = 8.0
GIVE_UP_SECONDS = 120.0
_UPN = re.compile(r"user(\d{4})@contoso\.com")
_IDENTITIES = re.compile(r"(\d+) compromised identities")


@dataclass(frozen=True)
class Floor:
    """The least time Graph's limits (as the sandbox emulates them) and the sandbox's own
    answering time allow for the requests a "disable all" must make."""

    requests: int  # HTTP requests: batches of 20 PATCHes, then batches of 20 read-backs
    limits_seconds: float  # what the throttling buckets alone impose
    service_seconds: float  # what the sandbox takes to answer those batches, one after another
    seconds: float  # the larger of the two


def disable_floor(
    contained: int,
    *,
    tenant_users: int,
    patch_batch_seconds: float,
    read_batch_seconds: float,
    read_query: dict[str, str] | None = None,
) -> Floor:
    """The floor of disabling and reading back ``contained`` cloud-only identities.

    The execution must send, for each identity, ``PATCH /users/{id}`` (accountEnabled false) and
    ``GET /users/{id}?$select=...`` (the read-back), in JSON batches of at most 20 requests:
    ``B = 2 × ⌈n / 20⌉`` HTTP requests. Graph throttles the requests inside a batch one by one
    (https://learn.microsoft.com/graph/throttling#throttling-and-batching) against the identity
    and access service's limits, as devtools/sandbox/throttling.py emulates them from
    https://learn.microsoft.com/graph/throttling-limits: a token bucket of ``C`` resource units
    refilled in 10 s (C = 3,500 / 5,000 / 8,000 for a tenant of under 50 / up to 500 / more users)
    and a write bucket of 3,000 per 150 s, both full at the start. With ``u_w``, ``u_r`` the units
    of one PATCH and one read (:func:`identity_cost`, the page's cost table), the buckets allow
    the whole set no sooner than

        limits = max(0, (n·(u_w + u_r) − C) / (C / 10 s), (n − 3,000) / (3,000 / 150 s))

    Below both quotas that is 0: the limits allow any speed. The sandbox answers a batch in its
    own time (the benchmark's process, one batch at a time), so the execution cannot end before

        service = ⌈n / 20⌉ · t_patch + ⌈n / 20⌉ · t_read

    where ``t_patch`` and ``t_read`` are the sandbox's time per batch of each kind in the same
    run (:func:`per_batch`). floor = max(limits, service).
    """
    n = contained
    batches = math.ceil(n / BATCH)
    units_write, writes = identity_cost("PATCH", "/users/x", {})
    units_read, _ = identity_cost("GET", "/users/x", read_query or {"$select": "id,accountEnabled"})
    capacity, refill_seconds = IDENTITY_AND_ACCESS_UNITS[tenant_size(tenant_users)]
    write_capacity, write_seconds = IDENTITY_AND_ACCESS_WRITES
    limits = max(
        0.0,
        (n * (units_write + units_read) - capacity) / (capacity / refill_seconds),
        (n * writes - write_capacity) / (write_capacity / write_seconds),
    )
    service = batches * patch_batch_seconds + batches * read_batch_seconds
    return Floor(2 * batches, round(limits, 3), round(service, 3), round(max(limits, service), 3))


def per_batch(spans: Sequence[tuple[float, float]]) -> float:
    """The sandbox's time per batch: the time it was answering at least one of them (the union
    of their spans: batches answered at once in its one event loop share it) ÷ how many."""
    return union(spans) / len(spans) if spans else 0.0


def union(spans: Iterable[tuple[float, float]]) -> float:
    """Seconds covered by at least one of ``spans`` (start, end)."""
    total = 0.0
    end = float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def batch_times(tenant: SandboxTenant, since: float, until: float) -> dict[str, list[tuple[float, float]]]:
    """When the sandbox was answering each ``POST /$batch`` in [since, until], by what it
    carried: ``patch`` (user updates), ``read`` (user reads), ``other``."""
    carried: dict[str, set[str]] = {}
    for inner in tenant.batched_requests:
        kind = "patch" if inner.method == "PATCH" and inner.path.startswith("/v1.0/users/") else "other"
        if inner.method == "GET" and inner.path.startswith("/v1.0/users/"):
            kind = "read"
        carried.setdefault(inner.batch_request_id, set()).add(kind)
    times: dict[str, list[tuple[float, float]]] = {"patch": [], "read": [], "other": []}
    for request in _graph_requests(tenant.requests, since, until):
        if request.path != "/v1.0/$batch":
            continue
        kinds = carried.get(request.request_id, {"other"})
        kind = next(iter(kinds)) if len(kinds) == 1 else "other"
        times[kind].append((request.arrived, request.answered))
    return times


def _graph_requests(requests: Iterable[RecordedRequest], since: float, until: float) -> list[RecordedRequest]:
    return [r for r in requests if r.path.startswith("/v1.0/") and since <= r.arrived <= until]


def campaign_calls(calls: Sequence[ConnectorCall]) -> list[ConnectorCall]:
    """The connector calls that posted or updated the campaign card."""
    return [c for c in calls if c.kind in ("create", "update") and c.card and CAMPAIGN_MARK in c.text]


def first_complete_card(calls: Sequence[ConnectorCall], identities: int) -> float | None:
    """When the connector first accepted a campaign card counting all ``identities``."""
    for call in campaign_calls(calls):
        found = _IDENTITIES.search(call.text)
        if found and int(found.group(1)) >= identities:
            return call.at
    return None


def reachable(
    listed: Iterable[str], card_alerts: dict[str, str], expected: dict[str, list[str]]
) -> dict[str, int]:
    """Alerts reachable from the campaign card: the identity (its 4-digit number) is ``listed``
    on one of the campaign card's pages, and the alert's id is on that identity's card
    (``card_alerts``: identity -> the card's JSON text). ``lost`` counts the rest, of which
    ``unlisted`` belong to identities no page lists and ``no_card`` to identities without a card."""
    on_pages = set(listed)
    lost = unlisted = no_card = 0
    for identity, ids in expected.items():
        if identity not in on_pages:
            unlisted += len(ids)
            lost += len(ids)
            continue
        text = card_alerts.get(identity)
        if text is None:
            no_card += len(ids)
            lost += len(ids)
            continue
        lost += sum(1 for i in ids if not re.search(re.escape(i) + r"(?![0-9A-Za-z])", text))
    return {"lost": lost, "unlisted": unlisted, "no_card": no_card}


def _policy(path: Path, identities: int, protected: str) -> None:
    """The default storm rule (threshold 20 in 10 minutes); two approvers; one protected
    account; storm.max_bulk lets "disable all" go past the hourly blast radius."""
    people = f"[{ALEX['id']}, {MEGAN['id']}]"
    path.write_text(
        f"responders: {{users: {people}}}\napprovers: {{users: {people}}}\n"
        f"protected_accounts: [{protected}]\n"
        f"storm: {{max_bulk: {identities}}}\n"
    )


async def run(
    mode: str,
    identities: int,
    per_identity: int,
    workdir: Path,
    *,
    graph_throttling: bool = True,
    shown_cards: int = 5,
) -> dict[str, Any]:
    """The storm through ``mode`` in storm mode, then "disable all"; returns the figures."""
    from tests.bench import storm  # the scenario, the push and the expected alerts are shared

    data = storm.scenario(identities, per_identity)
    protected = data["users"][0]["userPrincipalName"]
    tenant = SandboxTenant(
        data if mode == "poll" else {"users": data["users"], "alerts": []},
        cert_dir=workdir / "tenant",
        throttling=graph_throttling,
    )
    await tenant.start()
    connector = RecordingConnector(documented_limits=True)
    await connector.start()
    policy = workdir / "policy.yaml"
    _policy(policy, identities, protected)
    database = workdir / f"campaign-{mode}.db"
    env = replica_env(
        tenant,
        store_url=f"sqlite:///{database}",
        policy=policy,
        port=free_port(),
        PUSH_SHARED_SECRET=storm.SECRET,
        # The bot's default: every poll re-reads the last minutes of alerts (a storm's thousands),
        # which the one-card run's 5 s interval would repeat twelve times as often.
        POLL_INTERVAL_SECONDS="60",
    )
    bot = Replica(env, workdir / f"campaign-{mode}-bot.log")
    total = identities * per_identity
    figures: dict[str, Any] = {"mode": mode, "alerts": total, "identities": identities}
    try:
        await bot.wait_healthy()
        status, _ = await bot.post(install_activity(connector.service_url))
        assert status in (200, 201)
        started = time.monotonic()
        expected = storm._expected(tenant, data, mode)
        if mode == "push":
            async with aiohttp.ClientSession() as http:
                await storm._push_all(http, bot.url, data)
            stored_at = time.monotonic()  # the last push answered 202: its alerts are stored
        else:
            stored_at = await wait_stored(database, total)
        card_at = await _wait_card(connector, identities)
        checked_at = await _wait_checked(connector)
        await _wait_quiet(connector)
        storm_rss = bot.peak_rss_mb
        storm_posts = connector.of_kind("create")
        storm_graph = len([r for r in tenant.requests if r.path.startswith("/v1.0/")])
        figures.update(
            {
                "seconds_to_store": round(stored_at - started, 1),
                "card_seconds_after_stored": None if card_at is None else round(card_at - stored_at, 1),
                "facts_checked_seconds_after_stored": (
                    None if checked_at is None else round(checked_at - stored_at, 1)
                ),
                "top_level_posts": len(storm_posts),
                "campaign_card_updates": len(campaign_calls(connector.calls)) - 1,
                "graph_calls_storm": storm_graph,
                "graph_calls_per_alert": round(storm_graph / total, 3),
                "peak_rss_mb_storm": round(storm_rss, 1),
            }
        )
        post = _campaign_post(connector)
        listed, case_ids, pages = await _page_through(bot, connector, post)
        shown = await _show_cards(bot, connector, post, case_ids, listed, shown_cards)
        disabled = await _disable_all(bot, connector, tenant, database, post, data, protected)
        figures.update(disabled)
        figures["peak_rss_mb"] = round(bot.peak_rss_mb, 1)
    finally:
        bot.stop()
        await connector.stop()
        await tenant.stop()
    rendered = await _rendered_cards(database)
    seen = reachable(listed, rendered, expected)
    # The cards posted by Show card agree with the cards rendered from the case data.
    agree = sum(
        1
        for identity, text in shown.items()
        if _alerts_on(text, expected.get(identity, []))
        == _alerts_on(rendered.get(identity, ""), expected.get(identity, []))
    )
    figures.update(
        {
            "campaign_pages": pages,
            "identities_listed": len(listed),
            "lost_alerts": seen["lost"],
            "lost_unlisted": seen["unlisted"],
            "lost_without_card": seen["no_card"],
            "cards_shown_in_thread": len(shown),
            "shown_cards_agreeing": agree,
            "alerts_stored": storm._stored_alerts(database),
            "connector_429s": connector.throttled,
            "graph_429s": len(tenant.throttled),
            "graph_429s_by_service": dict(Counter(t.service for t in tenant.throttled)),
            "contract_violations": len(tenant.violations),
        }
    )
    return figures


async def wait_stored(database: Path, total: int, limit: float = 1800) -> float:
    """The moment every alert of the storm is in the store (read every 0.1 s)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if database.exists():  # noqa: ASYNC240 (a stat of a local file, every 0.1 s)
            try:
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
                    if int(db.execute("SELECT count(*) FROM alerts").fetchone()[0]) >= total:
                        return time.monotonic()
            except sqlite3.OperationalError:
                pass  # not migrated yet
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the storm's alerts were not all stored in {limit:.0f} s")


async def _wait_card(connector: RecordingConnector, identities: int, limit: float = 600) -> float | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        at = first_complete_card(connector.calls, identities)
        if at is not None:
            return at
        await asyncio.sleep(0.1)
    return None


async def _wait_checked(connector: RecordingConnector, limit: float = 600) -> float | None:
    """When the campaign card in the channel first showed every identity's facts read
    (protected, privileged, on-premises: no "not checked yet"), which "disable all" routes by."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        calls = campaign_calls(connector.calls)
        done = [c for c in calls if "not checked yet" not in c.text]
        if done:
            return done[0].at
        await asyncio.sleep(0.2)
    return None


async def _wait_quiet(connector: RecordingConnector) -> None:
    started = time.monotonic()
    while True:
        last = max((c.at for c in connector.calls), default=started)
        if time.monotonic() - last >= QUIET_SECONDS or time.monotonic() - started >= GIVE_UP_SECONDS:
            return
        await asyncio.sleep(0.5)


def _campaign_post(connector: RecordingConnector) -> ConnectorCall:
    posts = [p for p in connector.of_kind("create") if CAMPAIGN_MARK in p.text]
    if not posts:
        raise RuntimeError("no campaign card was posted")
    return posts[0]


def _latest_card(connector: RecordingConnector, post: ConnectorCall) -> dict[str, Any]:
    updates = [u for u in connector.of_kind("update") if u.activity_id == post.activity_id and u.card]
    card = (updates[-1] if updates else post).card
    assert card is not None
    return card


async def _click(
    bot: Replica,
    service_url: str,
    post: ConnectorCall,
    person: dict[str, str],
    verb: str,
    data: dict[str, Any],
) -> dict[str, Any]:
    """One Action.Execute on the campaign card, as Teams sends it; the card the bot answers with."""
    status, answer = await bot.post(
        invoke_activity(
            service_url,
            post.conversation_id,
            user_object_id=person["id"],
            user_name=person["name"],
            verb=verb,
            data=data,
        )
    )
    if status != 200 or not isinstance(answer, dict) or answer.get("statusCode") != 200:
        raise RuntimeError(f"{verb} was answered {status}: {str(answer)[:300]}")
    card: dict[str, Any] = answer["value"]
    return card


def _rows(card: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(identity number, case id or None) of each identity listed on a campaign card page."""
    found: list[tuple[str, str | None]] = []
    for column_set in _walk(card, "ColumnSet"):
        text = json.dumps(column_set)
        who = _UPN.search(text)
        if not who or "campaignPage" in text:
            continue
        case_id = None
        for action in _walk(column_set, "Action.Execute"):
            if action.get("verb") == "showCard":
                case_id = action["data"]["caseId"]
        found.append((who.group(1), case_id))
    return found


def _walk(node: Any, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == kind:
            found.append(node)
        for value in node.values():
            found += _walk(value, kind)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value, kind)
    return found


async def _page_through(
    bot: Replica, connector: RecordingConnector, post: ConnectorCall
) -> tuple[list[str], dict[str, str], int]:
    """Every page of the campaign card, as a responder pages it (Next page, click after click):
    the identities listed, their case ids (from their Show card buttons), the pages read."""
    card = _latest_card(connector, post)
    listed: list[str] = []
    case_ids: dict[str, str] = {}
    pages = 1
    while True:
        for who, case_id in _rows(card):
            listed.append(who)
            if case_id:
                case_ids[who] = case_id
        following = [a for a in _walk(card, "Action.Execute") if a.get("verb") == "campaignPage"]
        following = [a for a in following if a.get("title") == "Next page"]
        if not following:
            return listed, case_ids, pages
        card = await _click(
            bot, connector.service_url, post, ALEX, "campaignPage", dict(following[0]["data"])
        )
        pages += 1


async def _show_cards(
    bot: Replica,
    connector: RecordingConnector,
    post: ConnectorCall,
    case_ids: dict[str, str],
    listed: list[str],
    count: int,
    limit: float = 120,
) -> dict[str, str]:
    """Show card for ``count`` identities spread over the pages; their cards as posted in the
    campaign card's thread (identity -> card JSON text)."""
    chosen = [who for who in listed if who in case_ids]
    if not chosen or count <= 0:
        return {}
    step = max(1, len(chosen) // count)
    sample = chosen[::step][:count]
    campaign_id = card_action(_latest_card(connector, post), "bulkRequest")["data"]["campaignId"]
    for who in sample:
        await _click(
            bot,
            connector.service_url,
            post,
            ALEX,
            "showCard",
            {"campaignId": campaign_id, "caseId": case_ids[who]},
        )
    deadline = time.monotonic() + limit
    shown: dict[str, str] = {}
    while time.monotonic() < deadline and len(shown) < len(sample):
        shown = {}
        for call in connector.in_thread(post.activity_id):
            if call.card is None or CAMPAIGN_MARK in call.text:
                continue
            who = _UPN.search(call.text)
            if who and who.group(1) in sample:
                shown[who.group(1)] = json.dumps(call.card)
        await asyncio.sleep(0.2)
    return shown


async def _disable_all(
    bot: Replica,
    connector: RecordingConnector,
    tenant: SandboxTenant,
    database: Path,
    post: ConnectorCall,
    data: dict[str, Any],
    protected: str,
    limit: float = 1800,
) -> dict[str, Any]:
    """Alex asks for "disable all" on the campaign card, Megan approves it; timed from Megan's
    click to every non-protected identity disabled in the tenant and verified in the store."""
    card = _latest_card(connector, post)
    scopes = _walk(card, "Input.ChoiceSet")
    [who] = [s for s in scopes if s.get("id") == "bulkScope"]
    counted = [
        (int(m.group(1)), c["value"]) for c in who["choices"] if (m := re.search(r"\((\d+)\)$", c["title"]))
    ]
    size, scope = max(counted)
    request = dict(card_action(card, "bulkRequest")["data"])
    request.update(
        {
            "bulkScope": scope,
            "bulkAction": "disableAccount",
            "reason": "Storm benchmark: contain every identity",
        }
    )
    began = time.monotonic()
    answer = await _click(bot, connector.service_url, post, ALEX, "bulkRequest", request)
    request_seconds = time.monotonic() - began
    approve = next((a for a in _walk(answer, "Action.Execute") if a.get("verb") == "bulkApprove"), None)
    if approve is None:
        raise RuntimeError(f"the bulk request was not opened: {json.dumps(answer)[:600]}")
    bulk_id = approve["data"]["bulkId"]
    users = [u for u in data["users"] if u["userPrincipalName"] != protected]
    before_requests = len(tenant.requests)
    approved_at = time.monotonic()
    await _click(bot, connector.service_url, post, MEGAN, "bulkApprove", dict(approve["data"]))
    approve_seconds = time.monotonic() - approved_at
    deadline = approved_at + limit
    done_at: float | None = None
    disabled_at: float | None = None
    enabled = [u["id"] for u in users]
    while time.monotonic() < deadline:
        # Read sparingly: the sandbox answers Graph in this same process.
        enabled = [i for i in enabled if tenant.user(i)["accountEnabled"] is not False]
        if disabled_at is None and not enabled:
            disabled_at = time.monotonic()
        if disabled_at is not None and _verified(database, bulk_id) >= len(users):
            done_at = time.monotonic()
            break
        await asyncio.sleep(0.1)
    ended = done_at if done_at is not None else time.monotonic()
    during = _graph_requests(tenant.requests[before_requests:], approved_at, ended)
    batches = [r for r in during if r.path == "/v1.0/$batch"]
    times = batch_times(tenant, approved_at, ended)
    floor = disable_floor(
        len(users),
        tenant_users=len(data["users"]),
        patch_batch_seconds=per_batch(times["patch"]),
        read_batch_seconds=per_batch(times["read"]),
        read_query=_read_query(tenant, approved_at, ended),
    )
    seconds = ended - approved_at
    verified = _verified(database, bulk_id)
    protected_user = next(u for u in data["users"] if u["userPrincipalName"] == protected)
    return {
        "bulk_scope_identities": size,
        "bulk_request_click_seconds": round(request_seconds, 2),
        "bulk_approve_click_seconds": round(approve_seconds, 2),
        "contained_identities": len(users),
        "verified_identities": verified,
        "protected_left_enabled": tenant.user(protected_user["id"])["accountEnabled"] is True,
        "disable_all_finished": done_at is not None,
        "disable_all_seconds": round(seconds, 2),
        "disabled_in_tenant_seconds": None if disabled_at is None else round(disabled_at - approved_at, 2),
        "graph_requests_during_disable": len(during),
        "graph_batches_during_disable": len(batches),
        "graph_requests_by_path": dict(Counter(_shape(r.path) for r in during).most_common(8)),
        "graph_requests_per_identity": round(len(during) / max(len(users), 1), 3),
        "floor_requests": floor.requests,
        "floor_limits_seconds": floor.limits_seconds,
        "floor_service_seconds": floor.service_seconds,
        "floor_seconds": floor.seconds,
        "sandbox_seconds_per_patch_batch": round(per_batch(times["patch"]), 4),
        "sandbox_seconds_per_read_batch": round(per_batch(times["read"]), 4),
        "disable_ratio_to_floor": round(seconds / floor.seconds, 2) if floor.seconds else None,
    }


def _read_query(tenant: SandboxTenant, since: float, until: float) -> dict[str, str] | None:
    for inner in tenant.batched_requests:
        reads_user = inner.method == "GET" and inner.path.startswith("/v1.0/users/")
        if reads_user and since <= inner.arrived <= until:
            return dict(inner.query)
    return None


def _shape(path: str) -> str:
    return re.sub(r"/[0-9a-f]{8}-[0-9a-f-]{27}", "/{id}", path.removeprefix("/v1.0"))


def _verified(database: Path, bulk_id: str) -> int:
    """Identities of the bulk request whose own request succeeded and was verified by reading
    back, and whose case is contained (read from the store, as it stands)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT count(*) FROM action_requests r JOIN cases c ON c.id = r.case_id "
                "WHERE r.id LIKE ? AND r.state = 'succeeded' "
                "AND json_extract(r.data, '$.result.verified') = 1 "
                "AND json_extract(c.data, '$.status') = 'contained'",
                (f"{bulk_id}.%",),
            ).fetchone()
            return int(row[0])
    except sqlite3.OperationalError:
        return 0


async def _rendered_cards(database: Path) -> dict[str, str]:
    """Each campaign member's card as "Show card" would post it, rendered from its case data
    by the bot's own card renderer (identity number -> card JSON text)."""
    from bot.store import open_store
    from cards.case import render_case

    store = await open_store(f"sqlite:///{database}")
    try:
        cards: dict[str, str] = {}
        for campaign in await store.list_campaigns():
            for case in await store.list_campaign_cases(campaign.id):
                text = json.dumps(render_case(case))
                who = _UPN.search(text)
                if who:
                    cards[who.group(1)] = text
        return cards
    finally:
        await store.close()


def _alerts_on(card_text: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` a card's JSON text carries."""
    return {i for i in ids if re.search(re.escape(i) + r"(?![0-9A-Za-z])", card_text)}
