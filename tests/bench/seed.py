"""A year of history, and the cases the benchmark clicks on, written through the store's own API.

History is what a busy tenant accumulates: ``cases`` closed cases (contained, card in the channel)
each with one finished request (disabled, verified), spread over the past year. It goes in
through :class:`bot.store.base.Store` (no Graph, no Teams), so 10,000 of each take seconds.

The cases clicked on are the sandbox tenant's users with one alert each, as the bot would hold
them after posting their cards: the alert as Graph gives it, the card already in the channel,
the account read (enabled, cloud-only). Their alerts are older than the poll's look-back, so the
bot's first poll does not bring them in again.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.domain.models import (
    AccountState,
    ActionRequest,
    ActionResult,
    Actor,
    Alert,
    AlertSource,
    CardRef,
    Case,
    CaseStatus,
    IdentityFacts,
    IdentityRef,
    RequestState,
    ResponseAction,
    Severity,
)
from bot.store import open_store
from bot.tenant.intake import parse_graph_alert
from tests.support.harness import CHANNEL_ID

RESPONDER = {"id": "aaaaaaaa-0000-4000-8000-000000000001", "name": "Alex Wilber"}
SECOND = {"id": "aaaaaaaa-0000-4000-8000-000000000002", "name": "Megan Bowen"}
OUTSIDER = {"id": "aaaaaaaa-0000-4000-8000-0000000000ff", "name": "Eve Outsider"}
BATCH = 500


def write_policy(path: Path) -> Path:
    """Alex and Megan respond and approve; disabling and re-enabling need both of them."""
    people = f"{{users: [{RESPONDER['id']}, {SECOND['id']}]}}"
    path.write_text(
        f"responders: {people}\n"
        f"approvers: {people}\n"
        "approvals: {disableAccount: 2, enableAccount: 2}\n"
        "expiry_minutes: 30\n"
        "blast_radius_per_hour: 100000\n"
    )
    return path


def target_scenario(count: int, *, prefix: str = "target") -> dict[str, Any]:
    """``count`` cloud-only users with one Defender for Identity alert each, two hours old."""
    users = [
        {
            "id": f"7b000000-0000-4000-8000-{n:012d}",
            "userPrincipalName": f"{prefix}{n:04d}@contoso.com",
            "displayName": f"Bench Target {n:04d}",
        }
        for n in range(count)
    ]
    alerts = [
        {
            "user": user["userPrincipalName"],
            "serviceSource": "microsoftDefenderForIdentity",
            "title": f"Suspected identity theft for {user['displayName']}",
            "severity": "high",
            "minutes_ago": 120,
        }
        for user in users
    ]
    return {"users": users, "alerts": alerts}


@dataclass(frozen=True)
class Target:
    """A case the benchmark clicks on: its id, its card's activity id, the user behind it."""

    case_id: str
    activity_id: str
    user_id: str
    upn: str
    alert_ids: tuple[str, ...]
    revision: int


async def seed_history(url: str, cases: int, *, now: datetime | None = None) -> None:
    """``cases`` closed cases and as many finished requests, spread over the past year."""
    if cases <= 0:
        return
    now = now or datetime.now(UTC)
    store = await open_store(url)
    try:
        for start in range(0, cases, BATCH):
            numbers = range(start, min(start + BATCH, cases))
            alerts = [_history_alert(n, now) for n in numbers]
            ids = iter(f"hist-case-{n:05d}" for n in numbers)
            await store.record_alerts(alerts, new_case_id=lambda ids=ids: next(ids), now=now)
        for n in range(cases):
            case_id = f"hist-case-{n:05d}"
            await store.update_case(case_id, lambda case, n=n: _closed(case, n))
            await store.add_request(_finished_request(case_id, n, now))
    finally:
        await store.close()


def _history_alert(n: int, now: datetime) -> Alert:
    at = now - timedelta(days=365 * (n + 1) / 10_000, hours=2)
    return Alert(
        id=f"hist-alert-{n:05d}",
        source=AlertSource.DEFENDER_FOR_IDENTITY if n % 2 else AlertSource.IDENTITY_PROTECTION,
        title=f"Suspected identity theft #{n}",
        severity=Severity.HIGH,
        status="resolved",
        created_at=at,
        updated_at=at,
        target=IdentityRef(
            object_id=f"6c000000-0000-4000-8000-{n:012d}",
            upn=f"former{n:05d}@contoso.com",
            display_name=f"Former Employee {n:05d}",
        ),
    )


def _closed(case: Case, n: int) -> Case:
    activity = f"hist-{n:05d}"
    return case.model_copy(
        update={
            "status": CaseStatus.CONTAINED,
            "card": CardRef(conversation_id=f"{CHANNEL_ID};messageid={activity}", activity_id=activity),
            "published_revision": case.revision,
            "target_checked": True,
            "account": AccountState(enabled=False, checked_at=case.opened_at),
            "facts": IdentityFacts(read_at=case.opened_at),
        }
    )


def _finished_request(case_id: str, n: int, now: datetime) -> ActionRequest:
    at = now - timedelta(days=365 * (n + 1) / 10_000, hours=1)
    requester = Actor(object_id=RESPONDER["id"], name=RESPONDER["name"])
    second = Actor(object_id=SECOND["id"], name=SECOND["name"])
    return ActionRequest(
        id=f"hist-req-{n:05d}",
        case_id=case_id,
        action=ResponseAction.DISABLE_ACCOUNT,
        requester=requester,
        reason="contained after the sign-in from the anonymous IP",
        state=RequestState.SUCCEEDED,
        created_at=at,
        expires_at=at + timedelta(minutes=30),
        approvals=(requester, second),
        required_approvals=2,
        idempotency_key=f"hist-{n:05d}",
        decided_by=second,
        started_at=at + timedelta(minutes=2),
        finished_at=at + timedelta(minutes=2, seconds=3),
        reported_attempt=1,
        result=ActionResult(
            succeeded=True,
            summary="Account disabled in Entra ID and verified",
            verified=True,
            verified_state="accountEnabled = false",
            verified_at=at + timedelta(minutes=2, seconds=3),
        ),
    )


async def seed_targets(
    url: str, graph_alerts: Sequence[dict[str, Any]], *, now: datetime | None = None
) -> list[Target]:
    """One open case per alert, with its card in the channel (activity ``target-NNNN``)."""
    now = now or datetime.now(UTC)
    alerts = [a for a in (parse_graph_alert(raw) for raw in graph_alerts) if a is not None]
    alerts.sort(key=lambda a: a.target.upn or "")
    store = await open_store(url)
    targets: list[Target] = []
    try:
        ids = iter(f"target-case-{n:04d}" for n in range(len(alerts)))
        await store.record_alerts(alerts, new_case_id=lambda: next(ids), now=now)
        for n in range(len(alerts)):
            activity = f"target-{n:04d}"
            case = await store.update_case(
                f"target-case-{n:04d}", lambda case, activity=activity: _posted(case, activity, now)
            )
            targets.append(
                Target(
                    case_id=case.id,
                    activity_id=activity,
                    user_id=case.identity.object_id or "",
                    upn=case.identity.upn or "",
                    alert_ids=tuple(a.id for a in case.alerts),
                    revision=case.revision,
                )
            )
    finally:
        await store.close()
    return targets


def _posted(case: Case, activity: str, now: datetime) -> Case:
    return case.model_copy(
        update={
            "card": CardRef(conversation_id=f"{CHANNEL_ID};messageid={activity}", activity_id=activity),
            "published_revision": case.revision,
            "target_checked": True,
            "account": AccountState(enabled=True, checked_at=now),
            "facts": IdentityFacts(read_at=now),
        }
    )


def copy_database(template: Path, to: Path) -> None:
    """A copy of a SQLite store (checkpointed, so the copy holds everything)."""
    import sqlite3  # the benchmark's own copy of a file, not a store operation

    with sqlite3.connect(template) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(template, to)
